"""End to end with ``dagster dev`` (webserver + daemon) on PostgreSQL instance storage.

Files dropped into the journal are recorded by the running sensor with no manual step; a backfill
launched through the webserver's GraphQL API (``launchPartitionBackfill``) runs as one run and
leaves the table equal to the journal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from competition_pipeline import dburl
from competition_pipeline.contract import Fill, parse_line
from competition_pipeline.rows import fill_rows
from competition_pipeline.store import CompetitionStore
from competition_pipeline.windows import HOUR, Window
from tests.conftest import REPO
from tests.journal_helpers import fill, write_segment

pytestmark = pytest.mark.slow
SENSOR_INTERVAL = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    def __init__(self, port: int, process: subprocess.Popen, log: Path) -> None:
        self.port, self.process, self.log = port, process, log

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        assert "errors" not in payload, payload
        return payload["data"]


@pytest.fixture
def dagster_dev(
    dagster_home: Path, database_url: str, journal: Path, tmp_path: Path, request
) -> Iterator[DagsterDev]:
    """``dagster dev`` on the test's databases and journal; the journal sensor runs unless the
    test is marked ``sensor_off`` (a backfill test must not race the sensor for its windows)."""
    CompetitionStore(database_url).ensure_schema()  # the deploy step `competition-pipeline schema`
    port = free_port()
    env = dict(os.environ)
    env.update(
        COMPETITION_DATABASE_URL=database_url,
        FILL_JOURNAL_DIR=str(journal),
        FILL_SENSOR_DEFAULT_STATUS="stopped"
        if request.node.get_closest_marker("sensor_off")
        else "running",
        FILL_SENSOR_INTERVAL_SECONDS=str(SENSOR_INTERVAL),
    )
    log = tmp_path / "dagster-dev.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                dagster,
                "dev",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(REPO / "workspace.yaml"),
            ],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(port, process, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                dev.graphql("{ version }")
                break
            except OSError:
                if time.monotonic() > deadline:
                    tail = log.read_text()[-3000:]
                    raise AssertionError(f"dagster dev did not answer:\n{tail}") from None
                time.sleep(1)
        yield dev
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def stored_keys(database_url: str) -> set[tuple[int, str]]:
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        return set(conn.execute("SELECT trade_id, wallet FROM competition_fill_events").fetchall())


def journal_keys(journal: Path, windows: list[Window]) -> set[tuple[int, str]]:
    """The answer computed straight from the journal files: every valid fill's wallet rows."""
    keys = set()
    for window in windows:
        directory = journal / f"date={window.start:%Y-%m-%d}" / f"hour={window.start:%H}"
        for path in sorted(directory.glob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                result = parse_line(line)
                if type(result) is Fill and window.contains_ms(result.timestamp_ms):
                    keys.update((r[3], r[4]) for r in fill_rows(result, 0, "", 0))
    return keys


def wait_for(predicate, timeout: float, what: str, dev: DagsterDev) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{dev.log.read_text()[-4000:]}")
        time.sleep(0.5)


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
    # A late fill into the old hour, while everything runs.
    started = time.monotonic()
    write_segment(journal, old, "seg-2.jsonl", [fill(4, old.start_ms + 500)])
    expected = journal_keys(journal, [recent, old])
    wait_for(lambda: stored_keys(database_url) == expected, 60, "the late fill", dagster_dev)
    elapsed = time.monotonic() - started
    print(f"late fill recorded {elapsed:.1f}s after it was written, interval {SENSOR_INTERVAL}s")
    assert elapsed < 2 * SENSOR_INTERVAL  # the promise: within two sensor intervals


LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions runs(limit: 100) { runId status } }
  }
}"""


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
