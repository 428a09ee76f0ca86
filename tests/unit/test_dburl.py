"""Database URLs with several hosts, in libpq's form and SQLAlchemy's, handed to psycopg 3 as a
conninfo and to dagster-postgres (psycopg2) as a SQLAlchemy URL; the password never shown; the
connection defaults (connect timeout, keepalives) added where the URL does not set them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict

from competition_pipeline.store import dburl

LIBPQ = "postgresql://rec:s3cret@h1:5432,h2:5433/competition?target_session_attrs=read-write"
SQLA = (
    "postgresql+psycopg://rec:s3cret@/competition?host=h1:5432&host=h2:5433"
    "&target_session_attrs=read-write"
)
QUERY = (
    "postgres://rec:s3cret@/competition?host=h1,h2&port=5432,5433&target_session_attrs=read-write"
)


@pytest.mark.parametrize("url", [LIBPQ, SQLA, QUERY])
def test_both_multi_host_forms_reach_psycopg_as_one_conninfo(url: str) -> None:
    params = conninfo_to_dict(dburl.libpq(url, environ={}))
    assert params["host"] == "h1,h2" and params["port"] == "5432,5433"
    assert params["dbname"] == "competition" and params["user"] == "rec"
    assert params["password"] == "s3cret"
    assert params["target_session_attrs"] == "read-write"
    assert dburl.hosts_of(dburl.parse(url)) == [("h1", "5432"), ("h2", "5433")]


@pytest.mark.parametrize("url", [LIBPQ, SQLA, QUERY])
def test_both_multi_host_forms_reach_dagster_postgres_through_sqlalchemy(url: str) -> None:
    """dagster-postgres hands its URL to ``sqlalchemy.create_engine``: the psycopg2 dialect must
    see both hosts, their ports, and the session attributes."""
    engine = sa.create_engine(dburl.with_driver(url, "psycopg2", environ={}))
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    assert engine.dialect.driver == "psycopg2"
    assert kwargs["host"] == "h1,h2" and kwargs["port"] == "5432,5433"
    assert kwargs["target_session_attrs"] == "read-write" and kwargs["password"] == "s3cret"
    assert kwargs["keepalives_idle"] == "10" and kwargs["connect_timeout"] == "10"


def test_single_host_and_socket_urls_are_unchanged_in_meaning() -> None:
    one = conninfo_to_dict(dburl.libpq("postgresql://u@db.example:6432/c", environ={}))
    assert (one["host"], one["port"], one["dbname"]) == ("db.example", "6432", "c")
    sock = conninfo_to_dict(dburl.libpq("postgresql://u@/c?host=/run/postgresql", environ={}))
    assert sock["host"] == "/run/postgresql" and "port" not in sock
    v6 = dburl.libpq("postgresql://u@[::1]:5432,[fe80::1]:5433/c", environ={})
    assert conninfo_to_dict(v6)["host"] == "::1,fe80::1"
    url = dburl.with_driver("postgresql://u@db.example:6432/c", "psycopg2", environ={})
    assert url.startswith("postgresql+psycopg2://u@db.example:6432/c?")


def test_connection_defaults_yield_to_the_environment_and_the_url_wins() -> None:
    plain = conninfo_to_dict(dburl.libpq("postgresql://u@h/c", environ={}))
    assert plain["connect_timeout"] == "10" and plain["keepalives"] == "1"
    assert (plain["keepalives_idle"], plain["keepalives_interval"]) == ("10", "5")
    assert plain["keepalives_count"] == "3"
    env = {"DATABASE_KEEPALIVES_IDLE": "30", "DATABASE_CONNECT_TIMEOUT": "4"}
    tuned = conninfo_to_dict(dburl.libpq("postgresql://u@h/c?keepalives_idle=7", environ=env))
    assert tuned["keepalives_idle"] == "7" and tuned["connect_timeout"] == "4"
    with pytest.raises(dburl.DatabaseUrlError, match="DATABASE_KEEPALIVES_COUNT"):
        dburl.libpq("postgresql://u@h/c", environ={"DATABASE_KEEPALIVES_COUNT": "soon"})


@pytest.mark.parametrize(
    "url",
    [
        LIBPQ,
        SQLA,
        QUERY,
        "postgresql://rec@h1:5432,h2:5432/competition?password=s3cret",
        "postgresql+psycopg://rec@/competition?host=h1&host=h2&password=s3cret&sslmode=require",
        "postgresql://rec:s3cret@db.example/competition",
    ],
)
def test_the_password_is_never_shown_in_any_form(url: str) -> None:
    shown = dburl.redacted(url)
    assert "s3cret" not in shown and "***" in shown
    assert shown.startswith("postgresql://rec")
    assert dburl.password(url) == "s3cret"
    assert dburl.scrub(f"FATAL: bad password s3cret for {url}", url).count("s3cret") == 0
    assert "password" not in conninfo_to_dict(dburl.libpq(url, with_password=False, environ={}))


def test_a_bad_port_or_scheme_is_a_clear_error_without_the_url() -> None:
    for url in ("postgresql://u:s3cret@h1:54x2,h2/c", "mysql://u:s3cret@h/c", "not a url"):
        with pytest.raises(dburl.DatabaseUrlError) as raised:
            dburl.libpq(url, environ={})
        assert "s3cret" not in str(raised.value)
        assert raised.value.transient is False
