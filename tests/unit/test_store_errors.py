"""The store's one error boundary: every driver error becomes a ``StoreError``, classified
retryable or not in one place, its message without the password. No server (a refused port
stands for an unreachable database)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from competition_pipeline.store import schema
from competition_pipeline.store.database import CompetitionStore, StoreError, wrap_errors

URL = "postgresql://recorder:s3cret@db.example:5432/competition"


def _raised(exc: BaseException) -> StoreError:
    with pytest.raises(StoreError) as raised, wrap_errors("query failed on", URL):
        raise exc
    return raised.value


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (psycopg.OperationalError("server closed the connection (s3cret)"), True),
        (psycopg.errors.InsufficientPrivilege("permission denied"), False),
        (psycopg.errors.UndefinedTable("no such table"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("gone")), True),
    ],
)
def test_every_driver_error_becomes_a_store_error_classified_in_one_place(
    exc: BaseException, retryable: bool
) -> None:
    error = _raised(exc)
    assert error.retryable is retryable
    message = str(error)
    assert message.startswith("query failed on postgresql://recorder:***@db.example:5432/")
    assert "s3cret" not in message
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    assert f": {type(cause).__name__}: " in message


def test_a_schema_this_role_cannot_upgrade_is_terminal_and_other_errors_pass() -> None:
    error = _raised(schema.SchemaError(f"the schema of {URL} is behind"))
    assert not error.retryable and "s3cret" not in str(error)
    inner = StoreError("already mapped", retryable=True)
    assert _raised(inner) is inner
    with pytest.raises(ValueError), wrap_errors("query failed on", URL):
        raise ValueError("not a database error")


def test_an_unreachable_database_is_a_retryable_store_error() -> None:
    store = CompetitionStore("postgresql://nobody:pw@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(StoreError) as raised:
        store.connect()
    assert raised.value.retryable and str(raised.value).startswith("cannot connect to")
    assert ":pw@" not in str(raised.value)
