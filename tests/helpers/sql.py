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
