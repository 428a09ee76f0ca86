"""Connection poolers, with a real PgBouncer: session mode works (a window recorded through it);
transaction mode is refused at start with one clear, terminal error naming the cause, since it
breaks the per-window advisory locks and the load sessions' staging tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore, StoreTerminalError
from tests.helpers.environment import require_programs
from tests.helpers.journal import KEY, WINDOW, fill, write_segment
from tests.helpers.pooler import PGBOUNCER, pgbouncer
from tests.helpers.runs import materialize


@pytest.fixture(autouse=True)
def _pgbouncer_installed() -> None:
    require_programs("the pooler tests", PGBOUNCER)


def through(database_url: str, port: int) -> str:
    name = dburl.parse(database_url).database
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"


def test_a_transaction_mode_pooler_is_refused_at_start_naming_the_cause(
    database_url: str,
) -> None:
    with pgbouncer(database_url, "transaction") as port:
        store = CompetitionStore(through(database_url, port))
        with pytest.raises(StoreTerminalError, match="transaction \\(or statement\\) mode"):
            store.ensure_schema()
        with pytest.raises(StoreTerminalError) as raised:
            store.require_sessions()
    assert "pool_mode=session" in str(raised.value) and not raised.value.transient


def test_a_session_mode_pooler_records_a_window(database_url: str, journal: Path) -> None:
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(i, WINDOW.start_ms + i) for i in range(3)])
    with pgbouncer(database_url, "session") as port:
        url = through(database_url, port)
        CompetitionStore(url).require_sessions()  # passes
        result = materialize(url, journal, KEY)
    assert result.success
