"""A bounded run history: superseded recording runs are pruned after a retention period.

The sensor re-records the open hour every time the journal grows (about 120 runs an hour), and each
run leaves its run row and some 50 event rows in the instance. Once a later run has materialized
the same window, an earlier successful run says nothing the partition view needs: the job
``competition_prune_run_history`` (daily, schedule ``competition_run_history_pruning``) deletes
such runs older than ``RUN_HISTORY_RETENTION_DAYS`` (default 3). It keeps

* every window's latest materialization, and so the run that made it, with its check results;
* every failed (or otherwise unsuccessful) run, and every backfill range run;
* everything younger than the retention period.

So the partitions view and each window's latest materialization are unchanged, and the instance
grows by about one run per window instead of one per sensor tick.
"""

import datetime as dt
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from competition_pipeline.defs.dagster_internals import (
    PARTITION_NAME_TAG,
    AssetCheckExecutionsTable,
)
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
from competition_pipeline.defs.runs import records_fill_asset
from competition_pipeline.settings import Settings

_BATCH = 1000


@dataclass(frozen=True)
class PruneResult:
    examined: int
    pruned: list[str]
    kept_latest: int
    #: Check executions deleted with the pruned runs; None where the storage could not.
    check_executions_deleted: int | None = 0


def latest_materialization_runs(instance: dg.DagsterInstance) -> set[str]:
    """The run ids that hold some window's latest materialization (one indexed query per window
    set, then the runs of those events in batches)."""
    key = FILL_EVENTS_KEY
    by_partition = instance.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    storage_ids = sorted(set(by_partition.values()))
    runs: set[str] = set()
    for i in range(0, len(storage_ids), _BATCH):
        batch = storage_ids[i : i + _BATCH]
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=batch), limit=len(batch)
        )
        runs.update(record.run_id for record in result.records)
    return runs


def prune_superseded_runs(
    instance: dg.DagsterInstance, older_than: dt.datetime, max_runs: int = 20_000
) -> PruneResult:
    """Delete successful single-window recording runs older than ``older_than`` whose window has
    a later materialization; their events and check executions go with them."""
    keep = latest_materialization_runs(instance)
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS], updated_before=older_than),
        limit=max_runs,
        order_by="update_timestamp",
        ascending=True,
    )
    pruned = []
    deleted: int | None = 0
    for record in records:
        run = record.dagster_run
        if PARTITION_NAME_TAG not in run.tags or not records_fill_asset(run):
            continue
        if run.run_id in keep:
            continue
        count = _delete_check_executions(instance, run.run_id)
        deleted = None if count is None or deleted is None else deleted + count
        instance.delete_run(run.run_id)
        pruned.append(run.run_id)
    return PruneResult(
        examined=len(records),
        pruned=pruned,
        kept_latest=len(keep),
        check_executions_deleted=deleted,
    )


def _delete_check_executions(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """``delete_run`` leaves the run's rows in ``asset_check_executions``; remove them too, so
    the checks' history does not point at runs that no longer exist. Returns how many went, or
    None where the event log is not a SQL storage (nothing deleted; the op's log says so).

    Dagster has no public API for this (its table and connection are private, imported from
    ``dagster_internals.py``): ``tests/unit/test_dagster_internals.py`` pins the table's shape and
    ``tests/e2e/test_history.py`` that the rows go, so an upgrade that changes either fails there.
    """
    storage = instance.event_log_storage
    if not hasattr(storage, "index_connection"):
        return None
    with storage.index_connection() as conn:
        result = conn.execute(
            AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id == run_id)
        )
    return result.rowcount


def build_prune_run_history(config: Settings) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """Job ``competition_prune_run_history`` and its daily schedule; the retention's default (shown
    in the Launchpad) is ``config``'s, the settings ``build_defs`` was given."""

    class PruneConfig(dg.Config):
        retention_days: float = Field(
            default=config.run_history_retention_days,
            description="Prune superseded runs older than this (RUN_HISTORY_RETENTION_DAYS).",
        )
        max_runs: int = 20_000

    @dg.op(name="prune_superseded_runs")
    def prune_superseded_runs_op(context: dg.OpExecutionContext, config: PruneConfig) -> None:
        older_than = dt.datetime.now(dt.UTC) - dt.timedelta(days=config.retention_days)
        result = prune_superseded_runs(context.instance, older_than, config.max_runs)
        context.log.info(
            f"pruned {len(result.pruned)} superseded runs older than"
            f" {older_than:%Y-%m-%d %H:%M} UTC (examined {result.examined}; {result.kept_latest}"
            " runs hold a window's latest materialization)"
        )
        if result.pruned and result.check_executions_deleted is None:
            context.log.warning(
                "this instance's event log is not a SQL storage: the pruned runs' rows in"
                " asset_check_executions were left (the checks' history names runs that are"
                " gone)"
            )
        elif result.pruned:
            context.log.info(
                f"deleted {result.check_executions_deleted} check executions of the pruned runs"
            )

    @dg.job(
        name="competition_prune_run_history",
        description="Delete superseded successful recording runs older than the retention period.",
    )
    def prune_run_history_job() -> None:
        prune_superseded_runs_op()

    daily = dg.ScheduleDefinition(
        name="competition_run_history_pruning",
        job=prune_run_history_job,
        cron_schedule="35 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily at 03:35 UTC: prune superseded recording runs past the retention"
        " period.",
    )
    return prune_run_history_job, daily
