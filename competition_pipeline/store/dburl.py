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
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
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
    """The URL with its password replaced by ``***``: the only form ever shown."""
    try:
        return parse(url).set(drivername="postgresql").render_as_string(hide_password=True)
    except DatabaseUrlError:
        return "<invalid database URL>"


def password(url: str) -> str | None:
    try:
        return parse(url).password  # type: ignore[return-value]
    except DatabaseUrlError:
        return None


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` (for messages produced by drivers)."""
    secret = password(url)
    if secret:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text
