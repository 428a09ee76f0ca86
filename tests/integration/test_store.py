"""The store without Dagster: its one error boundary, and the reconciliation's read-only comparison.

The boundary tests need no server; the comparison tests use a fresh database (``database_url``).
"""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.rows import fill_rows
from competition_pipeline.fills.windows import Window
from competition_pipeline.store import dburl, schema
from competition_pipeline.store.database import CompetitionStore, StoreError, wrap_errors
from tests.helpers.journal import fill, line

URL = "postgresql://recorder:s3cret@db.example:5432/competition"
WINDOW = Window.from_key("2026-03-31-23:00")


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


def _rows(trade_ids: range, seq0: int) -> list[tuple]:
    rows: list[tuple] = []
    for seq, trade_id in enumerate(trade_ids, seq0):
        parsed = parse_line(line(fill(trade_id, WINDOW.start_ms + trade_id)))
        assert type(parsed) is Fill
        rows.extend(fill_rows(parsed, seq, "seg.jsonl", seq))
    return rows


def test_the_comparison_stages_batches_and_writes_nothing(database_url: str) -> None:
    store = CompetitionStore(database_url)
    store.ensure_schema()
    with store.window_comparison(WINDOW) as comparison:
        comparison.stage_rows(_rows(range(1, 4), 1))
        comparison.stage_rows(_rows(range(4, 6), 4))
        result = comparison.reconcile(sample=2)
    assert (result.expected_rows, result.stored_rows, result.missing) == (10, 0, 10)
    assert result.unexpected == result.changed == 0 and not result.exact
    assert len(result.missing_sample) == 2 and result.compared_by == "rows"
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        for table in (
            "competition_fill_events",
            "competition_fill_keys",
            "competition_fill_windows",
        ):
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
            assert count == (0,), table
        # No month partition is created for a comparison: only a load creates one.
        months = conn.execute(
            "SELECT count(*) FROM pg_inherits"
            " WHERE inhparent = 'competition_fill_events'::regclass"
            " AND inhrelid::regclass::text LIKE '%2026_03'"
        ).fetchone()
    assert months == (0,)
