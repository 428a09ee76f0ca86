"""End to end with ``dagster dev`` (webserver + daemon) on PostgreSQL instance storage.

Files dropped into the journal are recorded by the running sensor with no manual step; a backfill
launched through the webserver's GraphQL API (``launchPartitionBackfill``) runs as one run and
leaves the table equal to the journal.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from competition_harness.keys import journal_keys, stored_keys
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store import dburl
from tests.helpers.dagster_dev import (
    LAUNCH,
    SENSOR_INTERVAL,
    STATUS,
    DagsterDev,
    wait_for,
)
from tests.helpers.journal import fill, write_segment

pytestmark = pytest.mark.slow


def test_files_dropped_into_the_journal_are_recorded_by_the_sensor(
    dagster_dev: DagsterDev, database_url: str, journal: Path
) -> None:
    now = Window.containing_ms(int(time.time() * 1000))
    recent, old = Window(now.start - HOUR), Window(now.start - 100 * HOUR)
    write_segment(
        journal, recent, "seg-1.jsonl", [fill(1, recent.start_ms), fill(2, recent.start_ms + 1)]
    )
    write_segment(journal, old, "seg-1.jsonl", [fill(3, old.start_ms)])
    expected = journal_keys(journal, [recent, old])
    assert len(expected) == 6
    # The first tick comes once the daemon has loaded the code location; then within 2 intervals.
    wait_for(
        lambda: stored_keys(database_url) == expected, 90, "the sensor's first runs", dagster_dev
    )
    # A late fill into the old hour, while everything runs: recorded with no manual step. How
    # soon is a figure of the benchmark (figure i), not a timed assertion: the bound below only
    # ends the test on a machine too loaded to say anything.
    started = time.monotonic()
    write_segment(journal, old, "seg-2.jsonl", [fill(4, old.start_ms + 500)])
    expected = journal_keys(journal, [recent, old])
    wait_for(lambda: stored_keys(database_url) == expected, 120, "the late fill", dagster_dev)
    elapsed = time.monotonic() - started
    print(f"late fill recorded {elapsed:.1f}s after it was written, interval {SENSOR_INTERVAL}s")


@pytest.mark.sensor_off
def test_backfill_of_a_day_through_graphql_runs_as_one_run_and_is_exact(
    dagster_dev: DagsterDev, database_url: str, journal: Path
) -> None:
    day = [Window.from_key(f"2026-11-10-{hour:02d}:00") for hour in range(24)]
    trade_id = 1000
    for window in day:
        messages = [fill(trade_id + i, window.start_ms + i * 1000) for i in range(5)]
        messages.append("not json")  # one reject per window
        trade_id += 5
        write_segment(journal, window, "seg-1.jsonl", messages)
    params = {
        "assetSelection": [{"path": ["competition_fill_events"]}],
        "partitionNames": [w.key for w in day],
        "fromFailure": False,
    }
    launched = dagster_dev.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def completed() -> bool:
        backfill = dagster_dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["status"] not in ("FAILED", "CANCELED"), backfill
        return backfill["status"] == "COMPLETED_SUCCESS"

    wait_for(completed, 180, "the backfill", dagster_dev)
    backfill = dagster_dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    assert backfill["numPartitions"] == 24
    assert len(backfill["runs"]) == 1  # BackfillPolicy.single_run: a day is one run
    assert stored_keys(database_url) == journal_keys(journal, day)
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        assert conn.execute("SELECT count(*) FROM competition_fill_rejects").fetchone()[0] == 24
