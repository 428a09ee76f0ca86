"""Database URLs: accept what users pass, hand each driver the form it needs, never show a password.

Users pass ``postgresql://``, ``postgres://``, ``postgresql+psycopg://`` or ``postgresql+psycopg2://``
URLs (a unix-socket ``?host=/dir`` included). The competition loader speaks psycopg 3 (COPY);
dagster-postgres' instance storage must get ``postgresql+psycopg2://`` because SQLAlchemy 2.1 maps a
bare ``postgresql://`` to psycopg 3, which breaks its storage.
"""

from __future__ import annotations

from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}


class DatabaseUrlError(ValueError):
    """The URL is not a PostgreSQL URL; the message never contains the URL's password."""


def parse(url: str) -> URL:
    authority = url.strip().partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        raise DatabaseUrlError(
            "the database URL's user or password holds an unencoded '@':"
            " percent-encode it as %40 (postgresql://user:p%40ss@host/db)"
        )
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        raise DatabaseUrlError("not a database URL (expected postgresql://...)") from None
    if parsed.drivername not in _SCHEMES:
        raise DatabaseUrlError(
            f"unsupported scheme {parsed.drivername!r}: expected postgresql://, "
            "postgresql+psycopg:// or postgresql+psycopg2://"
        )
    return parsed


def libpq(url: str) -> str:
    """The URL as a libpq connection URI, for ``psycopg.connect``."""
    return parse(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_driver(url: str, driver: str) -> str:
    """The URL with the SQLAlchemy driver ``driver`` (``psycopg`` or ``psycopg2``)."""
    return parse(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL with its password replaced by ``***`` (in the userinfo and a ``password=`` query
    parameter): the only form ever shown."""
    try:
        parsed = parse(url).set(drivername="postgresql")
    except DatabaseUrlError:
        return "<invalid database URL>"
    hidden = {k: "***" for k in parsed.query if k.lower() in ("password", "sslpassword")}
    shown = parsed.render_as_string(hide_password=True)
    if hidden:  # rendered by hand: render_as_string would percent-encode the mask
        base = parsed.difference_update_query(hidden).render_as_string(hide_password=True)
        extra = "&".join(f"{k}=***" for k in hidden)
        shown = f"{base}{'&' if '?' in base else '?'}{extra}"
    return shown


def password(url: str) -> str | None:
    """The URL's password: its userinfo's, else a ``password=`` query parameter's."""
    try:
        parsed = parse(url)
    except DatabaseUrlError:
        return None
    if parsed.password:
        return parsed.password  # type: ignore[return-value]
    value = parsed.query.get("password")
    return (value[-1] if isinstance(value, tuple) else value) or None


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` (for messages produced by drivers)."""
    secret = password(url)
    if secret:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text
