"""SQL on a database URL, for tests that look at (or change) what a database holds, and fresh
databases on a server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from competition_pipeline.store import dburl
from competition_pipeline.tools import embedded


def query(database_url: str, statement: str, *params: object) -> list[tuple]:
    """The rows ``statement`` returns, in a transaction rolled back after."""
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        return conn.execute(statement, params or None).fetchall()


def scalar(database_url: str, statement: str, *params: object) -> object:
    """The first column of the first row ``statement`` returns (a count, a name)."""
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        return conn.execute(statement, params or None).fetchone()[0]  # type: ignore[index]


def execute(database_url: str, statement: str, *params: object) -> None:
    """Run ``statement`` and commit it."""
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        conn.execute(statement, params or None)


@contextmanager
def fresh_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new database on ``admin_url``'s server (empty, or a clone of ``template``), dropped
    after."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    if template is None:
        embedded.create_database(admin_url, name)
    else:
        with psycopg.connect(dburl.libpq(admin_url), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
    try:
        yield embedded.database_url(admin_url, name)
    finally:
        embedded.drop_database(admin_url, name)


#: The recorder's rights, as docs/examples/grants.sql gives them (SELECT and INSERT, the
#: windows' upsert, reads of what retention and rebuilds leave), on one test database.
RECORDER_GRANTS = """
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT TEMPORARY ON DATABASE {db} TO {role};
GRANT SELECT, INSERT ON competition_fill_events, competition_fill_keys, competition_fill_rejects,
      competition_fill_conflicts TO {role};
GRANT SELECT, INSERT, UPDATE ON competition_fill_windows, competition_fill_window_totals,
      competition_fill_followers TO {role};
GRANT SELECT ON competition_fill_rebuilds, competition_fill_revisions, competition_fill_retired,
      competition_fill_counter_offsets TO {role};
GRANT SELECT ON competitions TO {role};
GRANT EXECUTE ON FUNCTION competition_create_month(date) TO {role};
GRANT SELECT ON competition_participants TO {role};
GRANT SELECT, INSERT, DELETE ON competition_standings TO {role};
"""


@contextmanager
def recorder_role(database_url: str) -> Iterator[str]:
    """A login role with only the recorder's rights on the database: its URL, the role dropped
    after."""
    import os

    role = f"recorder_{os.getpid()}"
    database = dburl.parse(database_url).database
    with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        conn.execute(RECORDER_GRANTS.format(db=database, role=role))
    try:
        url = dburl.parse(database_url).set(username=role, password=None)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
