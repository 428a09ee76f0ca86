"""The private Dagster names this project relies on, pinned: an upgrade that moves or reshapes
one fails here first (each is imported from ``defs/dagster_internals.py`` alone)."""

import dagster as dg

from competition_pipeline.defs import dagster_internals


def test_the_check_executions_table_the_run_history_pruning_deletes_from_has_its_shape() -> None:
    table = dagster_internals.AssetCheckExecutionsTable
    assert table.name == "asset_check_executions"
    assert {"run_id", "asset_key", "check_name", "partition"} <= set(table.c.keys())


def test_the_run_tags_read_from_runs_are_the_ones_dagster_writes() -> None:
    assert dagster_internals.PARTITION_NAME_TAG == "dagster/partition"
    assert (
        dagster_internals.ASSET_PARTITION_RANGE_START_TAG == "dagster/asset_partition_range_start"
    )
    assert dagster_internals.ASSET_PARTITION_RANGE_END_TAG == "dagster/asset_partition_range_end"


def test_an_evaluation_can_name_the_materialization_it_checked() -> None:
    target = dagster_internals.AssetCheckEvaluationTargetMaterializationData(
        storage_id=1, run_id="r", timestamp=1.0
    )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("a"),
        check_name="c",
        passed=True,
        partition="2026-01-01-00:00",
        target_materialization_data=target,
    )
    assert evaluation.target_materialization_data.storage_id == 1
