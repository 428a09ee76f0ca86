"""Reading the Dagster runs of the fill asset: which windows a run records, and why it failed.

Shared by the follow sensors (live runs), the alerts (failed runs), the run-history pruning and
the metrics exporter, so that all of them read a run's partition tags the same way.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from competition_pipeline.defs.dagster_internals import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from competition_pipeline.defs.failures import failing_step
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
from competition_pipeline.defs.resources import CompetitionDatabase
from competition_pipeline.fills.windows import Window, windows_between

#: Dagster's wrappers around the error that says why a step failed.
_WRAPPERS = {
    "DagsterMaxRetriesExceededError",
    "RetryRequestedFromPolicy",
    "DagsterExecutionStepExecutionError",
}


def window_keys(run: dg.DagsterRun) -> list[str]:
    """The window keys a run of the asset records (one partition, or a backfill's range)."""
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        first = Window.from_key(tags[ASSET_PARTITION_RANGE_START_TAG])
        last = Window.from_key(tags[ASSET_PARTITION_RANGE_END_TAG])
        return [w.key for w in windows_between(first.start, last.end)]
    return []


def windows_label(run: dg.DagsterRun) -> str | None:
    """The window, or the ``first..last`` range, a run recorded (for an alert's text)."""
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return tags[PARTITION_NAME_TAG]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags.get(ASSET_PARTITION_RANGE_END_TAG)}"
    return None


def selects_fill_asset(run: dg.DagsterRun) -> bool:
    """The run selected the fill asset, or selected everything."""
    return run.asset_selection is None or FILL_EVENTS_KEY in run.asset_selection


#: Run tag of the jobs that are partitioned like the asset but record nothing (the rebuild job:
#: ``competition/kind=rebuild``). Their failures are not recording failures: neither alerted as
#: such nor counted in competition_fill_record_failures_total, and history pruning skips them.
KIND_TAG = "competition/kind"


def records_fill_asset(run: dg.DagsterRun) -> bool:
    """A partitioned run that selected the fill asset or all, of a job that records."""
    partitioned = PARTITION_NAME_TAG in run.tags or ASSET_PARTITION_RANGE_START_TAG in run.tags
    selection = run.asset_selection
    return (
        partitioned and KIND_TAG not in run.tags and (not selection or FILL_EVENTS_KEY in selection)
    )


def error_cause(error):  # noqa: ANN001, ANN202 (a SerializableErrorInfo)
    """The error that says why: past Dagster's retry and step-execution wrappers."""
    while error.cls_name in _WRAPPERS and (error.cause or error.context):
        error = error.cause or error.context
    return error


def run_error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """``Class: message`` of the first step failure's cause, else the run failure's message."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        if data is not None and data.error is not None:
            cause = error_cause(data.error)
            return f"{cause.cls_name}: {cause.message.strip()}"
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
        if entry.dagster_event and entry.dagster_event.message:
            return f"RunFailure: {entry.dagster_event.message}"
    return None


@contextmanager
def holding_run_lock(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    database: CompetitionDatabase,
    outcome: str,
) -> Iterator[None]:
    """The run's liveness lock, held while the step works: the sensors take a started run that
    holds it for alive, and one that does not (and logs nothing) for dead (see follow.py)."""

    def what() -> str:  # read only on failure: a run without a partition has no range
        if not (context.has_partition_key or context.has_partition_key_range):
            return f"run {context.run.run_id} {outcome}"
        keys = context.partition_key_range
        label = keys.start if keys.start == keys.end else f"{keys.start}..{keys.end}"
        return f"window {label} {outcome}"

    # The step's own errors are Failures already (see _record): only the lock's reach this.
    with failing_step(what):
        with database.store().holding_run_lock(context.run.run_id):
            yield
