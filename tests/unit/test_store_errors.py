"""The store's one error boundary: every driver error becomes a ``StoreError``, classified
retryable or not in one place, its message without the password. No server (a refused port
stands for an unreachable database)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from competition_pipeline.errors import PipelineError, TerminalError, TransientError
from competition_pipeline.fills.source import SourceError, SourceTerminalError
from competition_pipeline.recording.fill_events import RejectBudgetExceeded
from competition_pipeline.store import schema
from competition_pipeline.store.database import (
    CompetitionStore,
    StoreError,
    StoreTerminalError,
    StoreTransientError,
    wrap_errors,
)
from competition_pipeline.store.dburl import DatabaseUrlError
from competition_pipeline.store.rebuild import RebuildError
from competition_pipeline.store.standings import CompetitionError

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
        # A failover: the standby reached (or the old primary demoted), the server shut down,
        # a conflict the next attempt does not meet.
        (psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.TooManyConnections("sorry, too many clients already"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        # The rights, the schema, the URL: every attempt fails the same way.
        (psycopg.errors.InvalidPassword("password authentication failed"), False),
        (psycopg.errors.DatabaseDropped("database dropped"), False),
        (psycopg.OperationalError('FATAL: password authentication failed for "rec"'), False),
        (psycopg.OperationalError('FATAL: database "competition" does not exist'), False),
        (psycopg.OperationalError("FATAL: no pg_hba.conf entry for host"), False),
    ],
)
def test_every_driver_error_becomes_a_store_error_classified_in_one_place(
    exc: BaseException, retryable: bool
) -> None:
    error = _raised(exc)
    assert error.retryable is retryable
    assert isinstance(error, TransientError if retryable else TerminalError)
    assert isinstance(error, StoreTransientError if retryable else StoreTerminalError)
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


def test_an_unreachable_host_of_several_is_transient_and_names_no_password() -> None:
    """Both hosts refuse (a failover in progress): a transient error the retry gets past."""
    store = CompetitionStore(
        "postgresql://nobody:pw@127.0.0.1:1,127.0.0.1:2/none?target_session_attrs=read-write",
        connect_timeout=2,
    )
    with pytest.raises(StoreTransientError) as raised:
        store.connect()
    assert ":pw@" not in str(raised.value) and "127.0.0.1:2" in str(raised.value)


def test_one_hierarchy_every_failure_is_transient_or_terminal() -> None:
    """The product's failure classes share one base; each says whether a retry may help."""
    terminal = [
        SourceError("corrupt segment", retryable=False),
        RejectBudgetExceeded("too many rejects"),
        CompetitionError("unknown competition"),
        RebuildError("cannot undo"),
        DatabaseUrlError("not a database URL"),
        StoreError("denied", retryable=False),
    ]
    for error in terminal:
        assert isinstance(error, TerminalError) and not error.transient, error
    assert isinstance(SourceError("corrupt", retryable=False), SourceTerminalError)
    for error in (SourceError("stream restarting"), StoreError("gone", retryable=True)):
        assert isinstance(error, TransientError) and error.retryable
    assert all(isinstance(e, PipelineError) for e in terminal)
