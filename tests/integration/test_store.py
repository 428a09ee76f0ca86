"""The store without Dagster: the reconciliation's read-only comparison, on a fresh database
(``database_url``). The store's error boundary, which needs no server, is tested in
tests/unit/test_store_errors.py."""

from __future__ import annotations

from contextlib import closing

import psycopg

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.rows import fill_rows
from competition_pipeline.fills.windows import Window
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.journal import fill, line

WINDOW = Window.from_key("2026-03-31-23:00")


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


def test_the_stores_sessions_let_the_server_drop_a_dead_client_within_seconds(
    database_url: str,
) -> None:
    """Server-side keepalives and the client check are set on every session the store opens
    (outside any transaction: a rollback does not undo them), so a dead or cut-off host's
    session, and its advisory locks, end within about 30 s instead of the kernel's two hours."""
    store = CompetitionStore(database_url)
    with closing(store.connect()) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT 1")
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
                "client_connection_check_interval",
            )
        }
    assert shown == {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "30000",
        "client_connection_check_interval": "10s",
    }
