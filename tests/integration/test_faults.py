"""Faults: the database going away mid-load, kill -9 during COPY, concurrent runs of a window.

Each ends with the table exact: nothing lost, nothing twice. The faults are real: a backend
terminated with pg_terminate_backend, a process killed with SIGKILL, two runs racing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg

from competition_pipeline.store import dburl
from tests.helpers.journal import KEY, WINDOW, bulk_segment
from tests.helpers.runs import materialize, metadata
from tests.helpers.sql import query

FILLS = 300_000  # large enough that the load takes seconds, so the fault lands inside it


def wait_for_copy(database_url: str, timeout: float = 60) -> int:
    """The pid of the pipeline's backend once it is running COPY into the staging table."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'competition-pipeline'"
                " AND query LIKE 'COPY%%stage_%%' AND datname = current_database()"
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.02)
    raise AssertionError("the pipeline never reached COPY")


def stored_rows(database_url: str) -> int:
    return query(database_url, "SELECT count(*) FROM competition_fill_events")[0][0]


def test_database_connection_killed_mid_load_is_retried_and_ends_exact(
    database_url: str, journal: Path
) -> None:
    bulk_segment(journal, WINDOW, FILLS)
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault(
            "result", materialize(database_url, journal, raise_on_error=False)
        )
    )
    runner.start()
    pid = wait_for_copy(database_url)
    with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    runner.join(timeout=300)
    result = outcome["result"]
    events = result.all_events
    restarted = [e for e in events if e.event_type_value == "STEP_RESTARTED"]
    assert restarted, "the RetryPolicy did not retry the step"
    failure_messages = " ".join(
        str(e.event_specific_data) for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"
    )
    assert f"window {KEY}" in failure_messages and "database error" in failure_messages
    assert result.success  # the retry recorded the window
    assert stored_rows(database_url) == 2 * FILLS
    assert metadata(result)["rows_inserted"] == 2 * FILLS


def test_kill_9_during_copy_commits_nothing_and_the_rerun_is_exact(
    database_url: str, journal: Path, tmp_path: Path
) -> None:
    bulk_segment(journal, WINDOW, FILLS)
    script = tmp_path / "record.py"
    script.write_text(
        "import sys\n"
        "from competition_pipeline.recording.fill_events import record_window\n"
        "from competition_pipeline.fills.journal import JournalSource\n"
        "from competition_pipeline.store.database import CompetitionStore\n"
        "from competition_pipeline.fills.windows import Window\n"
        "store = CompetitionStore(sys.argv[1]); store.ensure_schema()\n"
        "record_window(JournalSource(sys.argv[2]), store, Window.from_key(sys.argv[3]))\n"
    )
    process = subprocess.Popen([sys.executable, str(script), database_url, str(journal), KEY])
    try:
        backend = wait_for_copy(database_url)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    # The server notices the dead client and aborts its transaction.
    deadline = time.monotonic() + 30
    while query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", backend)[0][
        0
    ]:
        assert time.monotonic() < deadline, "the killed client's backend never went away"
        time.sleep(0.1)
    assert stored_rows(database_url) == 0
    meta = metadata(materialize(database_url, journal))
    assert meta["rows_inserted"] == 2 * FILLS and meta["rows_already_present"] == 0
    assert stored_rows(database_url) == 2 * FILLS


def test_two_runs_of_the_same_window_at_once_are_exact(database_url: str, journal: Path) -> None:
    bulk_segment(journal, WINDOW, 50_000)
    results: list[dg.ExecuteInProcessResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(materialize(database_url, journal)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 2 and all(r.success for r in results)
    inserted = sorted(metadata(r)["rows_inserted"] for r in results)
    present = sorted(metadata(r)["rows_already_present"] for r in results)
    # The advisory lock serializes them: one records everything, the other finds it present.
    assert inserted == [0, 100_000] and present == [0, 100_000]
    assert stored_rows(database_url) == 100_000
