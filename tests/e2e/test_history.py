"""Run-history pruning on a real instance (PostgreSQL storage, read back through the webserver's
GraphQL): superseded runs go, the partitions view and every window's latest materialization stay
as they were, failed runs stay."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg
import pytest

from competition_pipeline.defs.history import build_prune_run_history
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.dagster_dev import dagster_dev_env, run_dagster_dev
from tests.helpers.journal import WINDOW, append, fill, line, write_segment
from tests.helpers.location import SETTINGS
from tests.helpers.runs import materialize

pytestmark = pytest.mark.slow

DOWN = "postgresql://recorder:secret@127.0.0.1:1/competition"
WINDOWS = [Window(WINDOW.start + i * HOUR) for i in range(4)]
KEYS = [w.key for w in WINDOWS]
VIEW = """
query View($partitions: [String!]) {
  assetNodes(assetKeys: [{path: ["competition_fill_events"]}]) {
    partitionStats { numMaterialized numFailed numPartitions }
    assetPartitionStatuses {
      ... on TimePartitionStatuses { ranges { status startKey endKey } }
    }
    latestMaterializationByPartition(partitions: $partitions) { runId partition timestamp }
  }
}"""


def instance_rows(instance_url: str) -> dict[str, int]:
    with psycopg.connect(dburl.libpq(instance_url)) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("runs", "event_logs", "asset_check_executions")
        }


def test_superseded_runs_are_pruned_and_the_partitions_view_is_unchanged(
    dagster_home: Path, database_url: str, instance_url: str, journal: Path, tmp_path: Path
) -> None:
    CompetitionStore(database_url).ensure_schema()
    instance = dg.DagsterInstance.get()
    a, b, c, d = WINDOWS
    runs: dict[str, list[str]] = {key: [] for key in KEYS}

    def record(window: Window, url: str = database_url) -> bool:
        result = materialize(
            url, journal, window.key, checks=True, instance=instance, raise_on_error=False
        )
        runs[window.key].append(result.run_id)
        return result.success

    # The open hour re-recorded as it grows: three runs of a, two of b; c recorded then failed;
    # d only failed.
    segment = write_segment(journal, a, "s.jsonl", [fill(1, a.start_ms)])
    assert record(a)
    for trade in (2, 3):
        append(segment, line(fill(trade, a.start_ms + trade)) + "\n")
        assert record(a)
    write_segment(journal, b, "s.jsonl", [fill(10, b.start_ms)])
    assert record(b) and record(b)
    write_segment(journal, c, "s.jsonl", [fill(20, c.start_ms)])
    assert record(c) and not record(c, DOWN)
    write_segment(journal, d, "s.jsonl", [fill(30, d.start_ms)])
    assert not record(d, DOWN)
    superseded = runs[a.key][:2] + runs[b.key][:1]
    failed = [runs[c.key][1], runs[d.key][0]]

    env = dagster_dev_env(database_url, journal, sensor_running=False)
    with run_dagster_dev(env, tmp_path / "dagster-dev.log") as dev:
        (before,) = dev.graphql(VIEW, {"partitions": KEYS})["assetNodes"]
        rows_before = instance_rows(instance_url)
        prune_run_history_job, _ = build_prune_run_history(SETTINGS)
        result = prune_run_history_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"prune_superseded_runs": {"config": {"retention_days": 0}}}},
        )
        assert result.success
        (after,) = dev.graphql(VIEW, {"partitions": KEYS})["assetNodes"]
        rows_after = instance_rows(instance_url)

    assert all(instance.get_run_by_id(run_id) is None for run_id in superseded)
    assert all(instance.get_run_by_id(run_id) is not None for run_id in failed)
    kept = [runs[a.key][2], runs[b.key][1], runs[c.key][0]]
    assert all(instance.get_run_by_id(run_id) is not None for run_id in kept)
    assert after == before
    latest = {m["partition"]: m["runId"] for m in after["latestMaterializationByPartition"] if m}
    assert latest == {a.key: kept[0], b.key: kept[1], c.key: kept[2]}
    assert before["partitionStats"]["numFailed"] >= 1  # d (and c, whose latest run failed)
    # The checks of every window's latest run are still there; the pruned runs' are gone.
    for key, run_id in zip((a, b, c), kept, strict=True):
        executions = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("competition_fill_events"), "reconciles_with_journal"),
            limit=100,
        )
        assert run_id in {e.run_id for e in executions}, key
        assert not {e.run_id for e in executions} & set(superseded)
    # Three of the eight recording runs go (plus the pruning job's own run stays).
    assert rows_after["runs"] == rows_before["runs"] - 3 + 1
    assert rows_after["event_logs"] < rows_before["event_logs"]
    print(f"instance rows before {rows_before}, after {rows_after}")
