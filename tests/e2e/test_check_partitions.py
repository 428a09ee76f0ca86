"""Asset checks per window through ``dagster dev`` on PostgreSQL instance storage (GraphQL).

A backfill (one ranged run) leaves one passed evaluation of each check per window, each on its
partition; a check executed alone for one partition evaluates that window; a check executed
alone without a partition fails its run with a message that says what to pick.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.checks import BLOCKING, RECONCILES
from competition_pipeline.store import dburl
from tests.helpers.dagster_dev import (
    EXECUTIONS,
    LAUNCH,
    LAUNCH_RUN,
    RUN,
    STATUS,
    DagsterDev,
    wait_for,
)
from tests.helpers.journal import fill, write_segment

#: The checks are launched by hand: the journal sensor is stopped (the dagster_dev fixture).
pytestmark = [pytest.mark.slow, pytest.mark.sensor_off]

WINDOWS = [Window(Window.from_key("2026-11-10-00:00").start + i * HOUR) for i in range(4)]
ASSET = {"path": ["competition_fill_events"]}


def executions(dev: DagsterDev, name: str, run_id: str) -> dict[str | None, str]:
    found = dev.graphql(EXECUTIONS, {"assetKey": ASSET, "checkName": name})
    return {
        e["partition"]: e["status"] for e in found["assetCheckExecutions"] if e["runId"] == run_id
    }


def launch_checks_alone(dev: DagsterDev, tags: dict[str, str]) -> str:
    """What the UI's Checks tab launches: the checks without the asset."""
    params = {
        "selector": {
            "repositoryLocationName": "competition_pipeline",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [],
            "assetCheckSelection": [{"assetKey": ASSET, "name": name} for name in BLOCKING],
        },
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    launched = dev.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def finished(dev: DagsterDev, run_id: str) -> dict:
    def done() -> bool:
        status = dev.graphql(RUN, {"id": run_id})["runOrError"]["status"]
        return status in ("SUCCESS", "FAILURE", "CANCELED")

    wait_for(done, 180, f"run {run_id}", dev)
    return dev.graphql(RUN, {"id": run_id})["runOrError"]


def test_checks_have_a_result_per_window_in_backfills_and_alone(
    dagster_dev: DagsterDev, database_url: str, journal: Path
) -> None:
    for i, window in enumerate(WINDOWS):
        write_segment(journal, window, "seg.jsonl", [fill(500 + i, window.start_ms + i)])
    params = {"assetSelection": [ASSET], "partitionNames": [w.key for w in WINDOWS]}
    launched = dagster_dev.graphql(LAUNCH, {"params": {**params, "fromFailure": False}})
    backfill_id = launched["launchPartitionBackfill"]["backfillId"]

    def backfill() -> dict:
        return dagster_dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]

    wait_for(lambda: backfill()["status"] == "COMPLETED_SUCCESS", 180, "the backfill", dagster_dev)
    (run,) = backfill()["runs"]
    for name in BLOCKING:
        assert executions(dagster_dev, name, run["runId"]) == {
            w.key: "SUCCEEDED" for w in WINDOWS
        }, name

    # The checks alone over the range, after a window's rows were deleted: that window fails.
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        conn.execute("DELETE FROM competition_fill_events WHERE trade_id = 502")
    tags = {
        "dagster/asset_partition_range_start": WINDOWS[0].key,
        "dagster/asset_partition_range_end": WINDOWS[-1].key,
    }
    run_id = launch_checks_alone(dagster_dev, tags)
    assert finished(dagster_dev, run_id)["status"] == "FAILURE"  # the blocking check failed
    expected = {w.key: "SUCCEEDED" for w in WINDOWS}
    assert executions(dagster_dev, "no_conflicting_duplicates", run_id) == expected
    assert executions(dagster_dev, RECONCILES, run_id) == {**expected, WINDOWS[2].key: "FAILED"}

    # One partition alone.
    run_id = launch_checks_alone(dagster_dev, {"dagster/partition": WINDOWS[1].key})
    assert finished(dagster_dev, run_id)["status"] == "SUCCESS"
    for name in BLOCKING:
        assert executions(dagster_dev, name, run_id) == {WINDOWS[1].key: "SUCCEEDED"}

    # No partition: the run fails, saying what to pick.
    run_id = launch_checks_alone(dagster_dev, {})
    run = finished(dagster_dev, run_id)
    assert run["status"] == "FAILURE"
    failures = [e for e in run["eventConnection"]["events"] if e.get("error")]
    assert failures and all("execute it for a partition" in e["error"]["message"] for e in failures)
    assert not any("CheckError" in e["error"]["message"] for e in failures)
