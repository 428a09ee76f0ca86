"""What is secret, and how it is hidden: the one place that decides (docs/security.md, section 1).

Every secret the product takes arrives in an environment variable (:data:`SECRET_VARIABLES`). A
secret may appear nowhere the product writes: CLI output, logs, run metadata and events, alerts,
sensor cursors, local state files, command lines. Two tools, used at every such exit:

* :func:`url` renders a URL with every secret in it replaced by ``***``: the userinfo's password
  (also in each host of a multi-host URL, and with an unencoded ``@`` in it), a ``password=``
  (``token=``...) query parameter, and a webhook's path (Slack's hooks carry their token there).
  Database URLs are rendered by :func:`competition_pipeline.store.dburl.redacted`.
* :func:`scrub` removes every secret known to this process (the variables' values, and the
  passwords inside the URLs, in each encoding) from a text made elsewhere: a driver's error, an
  exception message, a failed run's error copied into an alert.

Secrets shorter than :data:`MIN_SCRUBBED` characters are not scrubbed from free text (replacing
"ab" everywhere would garble every message); :func:`url` hides them whatever their length. No
Dagster import here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote

MASK = "***"
#: Every variable that holds a secret, or a URL that may carry one.
SECRET_VARIABLES = (
    "COMPETITION_DATABASE_URL",
    "COMPETITION_OWNER_DATABASE_URL",
    "DAGSTER_POSTGRES_URL",
    "TEST_DATABASE_URL",
    "CELERY_BROKER_URL",
    "NATS_URL",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_NKEY_SEED",
    "SLACK_BOT_TOKEN",
    "ALERT_WEBHOOK_URL",
    "PGPASSWORD",
)
#: Variables whose whole value is a secret (not a URL that carries one).
_WHOLE = frozenset(
    {"NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED", "SLACK_BOT_TOKEN", "PGPASSWORD"}
)
#: Variables that are URLs whose path and query are the secret (a webhook).
_WEBHOOKS = frozenset({"ALERT_WEBHOOK_URL"})
#: Query parameters that carry a secret (libpq's ``password``, ``sslpassword``; tokens).
SECRET_PARAMETERS = frozenset(
    {"password", "sslpassword", "pass", "passwd", "pwd", "token", "secret", "auth_token"}
)
MIN_SCRUBBED = 4
_MASKED = rf"\g<1>{MASK}"
#: Schemes whose userinfo without a password is a token (NATS: ``nats://TOKEN@host``).
_TOKEN_SCHEMES = ("nats", "tls", "ws", "wss")
_DATABASE_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:" + "|".join(sorted(SECRET_PARAMETERS)) + r")=)[^&#\s'\"]*"
)


def _split_authority(value: str) -> tuple[str, str, str, str] | None:
    """``(scheme, userinfo, hosts, rest)`` of ``scheme://userinfo@hosts/rest``, by hand: a
    userinfo may hold an unencoded ``@`` and the hosts may be several (``h1:5432,h2:5433``),
    which ``urlsplit`` does not take. None when ``value`` has no ``scheme://``."""
    scheme, sep, after = value.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return None
    # The authority ends at the first "/", "?" or "#" after the userinfo's last "@".
    at = after.rfind("@", 0, _first(after, "/?#", after.rfind("@") + 1))
    userinfo, hosts_and_rest = (after[:at], after[at + 1 :]) if at >= 0 else ("", after)
    end = _first(hosts_and_rest, "/?#", 0)
    return scheme, userinfo, hosts_and_rest[:end], hosts_and_rest[end:]


def _first(text: str, chars: str, start: int) -> int:
    found = [i for c in chars if (i := text.find(c, max(start, 0))) >= 0]
    return min(found) if found else len(text)


def url(value: str, *, webhook: bool = False) -> str:
    """``value`` with every secret in it replaced by ``***`` (see the module docstring); a
    webhook's path and query are hidden whole. Never raises; something that is not a URL is
    shown as ``<not a URL>`` (it may be a secret pasted into the wrong variable)."""
    parts = _split_authority(value.strip())
    if parts is None:
        return "<not a URL>"
    scheme, userinfo, hosts, rest = parts
    if scheme.lower() in _DATABASE_SCHEMES and not webhook:
        from competition_pipeline.store import dburl

        shown = dburl.redacted(value)
        if not shown.startswith("<"):
            return _QUERY_SECRET.sub(_MASKED, shown)
    user, has_password, _ = userinfo.partition(":")
    if userinfo and not has_password and scheme.lower() in _TOKEN_SCHEMES:
        user = MASK  # a token
    shown_user = f"{user}:{MASK}@" if has_password else (f"{user}@" if userinfo else "")
    if webhook:
        return f"{scheme}://{shown_user}{hosts}{'/' + MASK if rest.strip('/') else ''}"
    return f"{scheme}://{shown_user}{hosts}{_QUERY_SECRET.sub(_MASKED, rest)}"


def secrets_of(value: str, *, whole: bool = False, webhook: bool = False) -> set[str]:
    """The secret substrings of ``value`` (a URL's passwords, its secret query parameters, a
    webhook's path and query; all of it when ``whole``), each in its plain and encoded forms."""
    if not value:
        return set()
    found: set[str] = set()
    if whole:
        found.add(value)
    parts = _split_authority(value.strip())
    if parts is not None:
        scheme, userinfo, _, rest = parts
        user, has_password, password = userinfo.partition(":")
        if has_password and password:
            found.add(password)
        elif user and scheme.lower() in _TOKEN_SCHEMES:
            found.add(user)  # nats://TOKEN@host
        if webhook and rest.strip("/"):
            found.update({value, rest, rest.lstrip("/")})
        query = rest.partition("?")[2].partition("#")[0]
        for key, item in parse_qsl(query, keep_blank_values=True):
            if key.lower() in SECRET_PARAMETERS and item:
                found.add(item)
    elif webhook:
        found.add(value)  # a malformed webhook URL: all of it is secret
    out: set[str] = set()
    for secret in found:
        out.update({secret, unquote(secret), quote(secret, safe=""), quote_plus(secret)})
    return {s for s in out if s}


def known_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret this process was given (:data:`SECRET_VARIABLES` in ``environ``)."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name in SECRET_VARIABLES:
        value = env.get(name)
        if value:
            found |= secrets_of(value, whole=name in _WHOLE, webhook=name in _WEBHOOKS)
    return found


def scrub(text: str, extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` without any secret known to this process (and the secrets of the URLs or values
    in ``extra``); URL-shaped secrets left in it are rendered by :func:`url`'s rules too."""
    secrets = known_secrets(environ)
    for value in extra:
        secrets |= secrets_of(value)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SCRUBBED:
            text = text.replace(secret, MASK)
    return _QUERY_SECRET.sub(_MASKED, _USERINFO.sub(_mask_userinfo, text))


_USERINFO = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):([^\s'\"]*)@(?=[^\s@]*(?:\s|$|['\"]))"
)


def _mask_userinfo(match: re.Match[str]) -> str:
    return f"{match.group(1)}:{MASK}@" if match.group(2) != MASK else match.group(0)
