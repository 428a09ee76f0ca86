"""Database URLs: accept what users pass, hand each driver the form it needs, never show a password.

Users pass ``postgresql://``, ``postgres://``, ``postgresql+psycopg://`` or ``postgresql+psycopg2://``
URLs (a unix-socket ``?host=/dir`` included), naming one host or several: libpq's form
``postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`` and SQLAlchemy's
``postgresql+psycopg://u@/db?host=h1:5432&host=h2:5432&target_session_attrs=read-write``.
:func:`parse` reads both into one SQLAlchemy URL (several hosts as repeated ``host`` parameters,
which SQLAlchemy's psycopg and psycopg2 dialects hand to libpq as ``host=h1,h2 port=p1,p2``);
:func:`libpq` renders it as a libpq conninfo for psycopg 3, :func:`with_driver` as a SQLAlchemy URL
for dagster-postgres' instance storage (psycopg2: SQLAlchemy 2.1 maps a bare ``postgresql://`` to
psycopg 3, which breaks that storage).

Both add the client's dead-peer detection (``connect_timeout`` and TCP keepalives,
:data:`CONNECTION_DEFAULTS`) unless the URL names them: the URL
wins, then the environment (``DATABASE_CONNECT_TIMEOUT``, ``DATABASE_KEEPALIVES_IDLE``,
``..._INTERVAL``, ``..._COUNT``), then the defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote, quote_plus, unquote

from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from competition_pipeline.errors import TerminalError

_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}

# libpq's multi-host URI: scheme://[userinfo@]host1[:port1],host2[:port2]/... (netloc with commas).
_NETLOC = re.compile(r"^(?P<scheme>[a-z0-9+]+)://(?P<netloc>[^/?#]*)(?P<rest>.*)$", re.IGNORECASE)


class DatabaseUrlError(TerminalError, ValueError):
    """The URL is not a PostgreSQL URL; the message never contains the URL's password."""


def _split_hostport(spec: str) -> tuple[str, str | None]:
    """``h``, ``h:5432``, ``[::1]:5432`` or ``/socket/dir`` -> (host, port or None)."""
    if spec.startswith("["):
        host, _, tail = spec[1:].partition("]")
        return host, tail[1:] or None if tail.startswith(":") else None
    if spec.startswith("/") or ":" not in spec:
        return spec, None
    host, _, port = spec.rpartition(":")
    return host, port or None


def _hostport(host: str, port: str | None) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("/") else host
    return f"{shown}:{port}" if port else shown


def _normalized(url: str) -> str:
    """libpq's comma-separated hosts (in the authority, or ``?host=a,b&port=p,q``) as SQLAlchemy's
    repeated ``host=h:p`` parameters; any other URL unchanged."""
    match = _NETLOC.match(url)
    if match is None:
        return url
    netloc, rest = match["netloc"], match["rest"]
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return url
    path, mark, query = rest.partition("?")
    specs = [_split_hostport(unquote(h)) for h in hosts.split(",")]
    host_params = "&".join(f"host={quote(_hostport(h, p), safe='/:[]')}" for h, p in specs)
    query = f"{host_params}&{query}" if query else host_params
    return f"{match['scheme']}://{userinfo}{at}{path or '/'}?{query}"


def parse(url: str) -> URL:
    authority = url.strip().partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        raise DatabaseUrlError(
            "the database URL's user or password holds an unencoded '@':"
            " percent-encode it as %40 (postgresql://user:p%40ss@host/db)"
        )
    try:
        parsed = make_url(_normalized(url.strip()))
    except (ArgumentError, ValueError):
        raise DatabaseUrlError("not a database URL (expected postgresql://...)") from None
    if parsed.drivername not in _SCHEMES:
        raise DatabaseUrlError(
            f"unsupported scheme {parsed.drivername!r}: expected postgresql://, "
            "postgresql+psycopg:// or postgresql+psycopg2://"
        )
    hosts = parsed.query.get("host")
    if isinstance(hosts, str) and "," in hosts:  # ?host=a,b&port=p,q (libpq's query form)
        names = hosts.split(",")
        ports = str(parsed.query.get("port") or "").split(",")
        ports += [""] * (len(names) - len(ports))
        parsed = parsed.update_query_dict(
            {"host": [_hostport(h, p or None) for h, p in zip(names, ports, strict=False)]}
        ).difference_update_query(["port"])
    try:
        for _host, port in hosts_of(parsed):
            if port is not None:
                int(port)
    except ValueError:
        raise DatabaseUrlError("not a database URL: a host's port is not a number") from None
    return parsed


def hosts_of(parsed: URL) -> list[tuple[str, str | None]]:
    """The (host, port) pairs the URL names, in order (one for a single-host URL)."""
    hosts = parsed.query.get("host")
    if hosts:
        specs = [hosts] if isinstance(hosts, str) else list(hosts)
        pairs = [_split_hostport(s) for s in specs]
        if len(pairs) == 1 and pairs[0][1] is None and parsed.port is not None:
            pairs = [(pairs[0][0], str(parsed.port))]
        return pairs
    if parsed.host:
        return [(parsed.host, str(parsed.port) if parsed.port is not None else None)]
    return []


def _query_password(parsed: URL) -> str | None:
    value = parsed.query.get("password")
    if isinstance(value, tuple):
        value = value[0] if value else None
    return value or None


#: libpq parameter -> (environment variable, default), added to every database connection the
#: product opens (competition tables and Dagster's instance storage) where the URL does not name
#: the parameter. A peer that stops answering is found in keepalives_idle + keepalives_interval
#: * keepalives_count seconds (10 + 5 * 3 = 25 s) on an idle connection; a host that does not
#: answer a connect is given up after connect_timeout (libpq: per host of a multi-host URL).
CONNECTION_DEFAULTS: dict[str, tuple[str, int]] = {
    "connect_timeout": ("DATABASE_CONNECT_TIMEOUT", 10),
    "keepalives": ("DATABASE_KEEPALIVES", 1),
    "keepalives_idle": ("DATABASE_KEEPALIVES_IDLE", 10),
    "keepalives_interval": ("DATABASE_KEEPALIVES_INTERVAL", 5),
    "keepalives_count": ("DATABASE_KEEPALIVES_COUNT", 3),
}


def connection_params(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The connect timeout and keepalives to add where the URL does not name them, read from the
    environment at connect time (as libpq reads its own ``PG*`` variables): the settings layer
    sits above the store, and every connection, the instance storage's included, needs them."""
    env = os.environ if environ is None else environ
    params = {}
    for name, (variable, default) in CONNECTION_DEFAULTS.items():
        value = (env.get(variable) or "").strip()
        if value and not value.isdigit():
            raise DatabaseUrlError(f"{variable} must be a whole number of seconds, not {value!r}")
        params[name] = value or str(default)
    return params


def libpq(url: str, *, with_password: bool = True, environ: Mapping[str, str] | None = None) -> str:
    """The URL as a libpq conninfo (``host=h1,h2 port=p1,p2 dbname=...``), for ``psycopg.connect``
    and psql, with the connection defaults the URL does not set (:func:`connection_params`)."""
    parsed = parse(url)
    params: dict[str, str] = {}
    pairs = hosts_of(parsed)
    if pairs:
        params["host"] = ",".join(h for h, _ in pairs)
        if any(p is not None for _, p in pairs):
            params["port"] = ",".join(p or "" for _, p in pairs)
    elif parsed.port is not None:
        params["port"] = str(parsed.port)
    if parsed.database:
        params["dbname"] = parsed.database
    if parsed.username:
        params["user"] = parsed.username
    if with_password and parsed.password:
        params["password"] = str(parsed.password)
    for key, value in parsed.query.items():
        if key in ("host", "port") or (key == "password" and not with_password):
            continue
        params[key] = value[-1] if isinstance(value, tuple) else value
    for key, value in connection_params(environ).items():
        params.setdefault(key, value)
    return make_conninfo("", **params)


def with_driver(url: str, driver: str, *, environ: Mapping[str, str] | None = None) -> str:
    """The URL with the SQLAlchemy driver ``driver`` (``psycopg`` or ``psycopg2``), several hosts
    as repeated ``host`` parameters, and the connection defaults the URL does not set."""
    parsed = parse(url)
    pairs = hosts_of(parsed)
    if len(pairs) > 1:
        parsed = parsed.set(host=None, port=None).update_query_dict(
            {"host": [_hostport(h, p) for h, p in pairs]}
        )
    missing = {k: v for k, v in connection_params(environ).items() if k not in parsed.query}
    parsed = parsed.update_query_dict(missing)
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL with its password (in the authority, a ``password=`` or ``sslpassword=``
    parameter) replaced by ``***``: the only form ever shown."""
    try:
        parsed = parse(url)
    except DatabaseUrlError:
        return "<invalid database URL>"
    hidden = {k: "***" for k in parsed.query if k.lower() in ("password", "sslpassword")}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    shown = parsed.set(drivername="postgresql").render_as_string(hide_password=True)
    # Hosts read as typed (``host=h1:5432``, ``host=/run/postgresql``), not percent-encoded.
    return shown.replace("%2A%2A%2A", "***").replace("%3A", ":").replace("%2F", "/")


def password(url: str) -> str | None:
    """The URL's password, from the authority or a ``password=`` parameter."""
    try:
        parsed = parse(url)
    except DatabaseUrlError:
        return None
    return parsed.password or _query_password(parsed)  # type: ignore[return-value]


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` (for messages produced by drivers)."""
    secret = password(url)
    if secret:
        for form in sorted({secret, quote(secret, safe=""), quote_plus(secret)}, key=len)[::-1]:
            text = text.replace(form, "***")
    return text
