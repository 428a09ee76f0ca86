"""Per-window asset checks on ``competition_fill_events``: provably equal to the journal.

* ``reconciles_with_journal`` (ERROR, blocking): re-reads the window from the source and compares
  the rows its valid fills give (minus recorded conflicts) with the rows stored for it.
* ``no_conflicting_duplicates`` (ERROR): no conflict recorded for the window.
* ``rejects_within_budget``: WARN when the window has rejects, ERROR above the threshold.

Every window gets its own result (its partition in the check's partition view): a run of one
window evaluates it here; a check executed alone over a range evaluates every window of the
range and yields one ``AssetCheckEvaluation`` per window; a ranged run of the asset (a backfill)
evaluates its windows in the asset step itself (see ``window_checks.py``).
"""

import warnings
from collections.abc import Iterator

import dagster as dg

from competition_pipeline.assets import holding_run_lock
from competition_pipeline.partitions import FILL_EVENTS_KEY, fill_partitions
from competition_pipeline.resources import CompetitionDatabase, FillSourceResource, RecordingPolicy
from competition_pipeline.settings import Settings
from competition_pipeline.window_checks import NO_CONFLICTS, RECONCILES, REJECTS, WindowChecks
from competition_pipeline.windows import Window, windows_between

# Partitioned asset checks are "preview" in Dagster 1.13; the per-window checks rely on them.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)

CheckEvents = Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output]


def _evaluate(
    context: dg.AssetCheckExecutionContext, checks: WindowChecks, name: str
) -> CheckEvents:
    """One window: its result. A range: one evaluation per window, then the step's output."""
    if context.has_partition_key:
        outcome = checks.outcome(name, Window.from_key(context.partition_key))
        yield dg.AssetCheckResult(
            passed=outcome.passed, metadata=outcome.metadata, severity=outcome.severity
        )
        return
    if not context.has_partition_key_range:
        raise dg.Failure(
            description=(
                f"{name} checks hourly windows of competition_fill_events: execute it for a"
                " partition (an hour, YYYY-MM-DD-HH:00 UTC, e.g. 2026-11-20-03:00) or a range of"
                " them; from the UI materialize the partition (Materialize..., which runs its"
                " checks with it: Dagster's Checks tab cannot execute a partitioned check alone),"
                " from the CLI add"
                " --partition 2026-11-20-03:00 or --partition-range START...END"
            ),
            allow_retries=False,
        )
    time_window = context.partition_time_window
    checks.instance = context.instance
    for window in windows_between(time_window.start, time_window.end):
        yield checks.evaluation(name, window)
    # The evaluations above are the step's results; the output only completes the step.
    yield dg.Output(None)


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """The three per-window checks, partitioned like the asset (``settings``' partitions)."""
    partitions = fill_partitions(settings)

    @dg.asset_check(
        asset=FILL_EVENTS_KEY,
        name=RECONCILES,
        blocking=True,
        partitions_def=partitions,
        description="The window's valid journal fills give exactly the stored rows (by key).",
    )
    def reconciles_with_journal(
        context: dg.AssetCheckExecutionContext,
        database: CompetitionDatabase,
        fill_source: FillSourceResource,
    ) -> CheckEvents:
        with holding_run_lock(context, database, "not checked"):
            yield from _evaluate(
                context, WindowChecks(database, fill_source=fill_source), RECONCILES
            )

    @dg.asset_check(
        asset=FILL_EVENTS_KEY,
        name=NO_CONFLICTS,
        partitions_def=partitions,
        description="No message of the window had the key of a recorded fill with other content.",
    )
    def no_conflicting_duplicates(
        context: dg.AssetCheckExecutionContext, database: CompetitionDatabase
    ) -> CheckEvents:
        with holding_run_lock(context, database, "not checked"):
            yield from _evaluate(context, WindowChecks(database), NO_CONFLICTS)

    @dg.asset_check(
        asset=FILL_EVENTS_KEY,
        name=REJECTS,
        partitions_def=partitions,
        description=(
            "WARN when the window quarantined rejects; ERROR above the configured threshold."
        ),
    )
    def rejects_within_budget(
        context: dg.AssetCheckExecutionContext,
        database: CompetitionDatabase,
        policy: RecordingPolicy,
    ) -> CheckEvents:
        with holding_run_lock(context, database, "not checked"):
            yield from _evaluate(context, WindowChecks(database, policy=policy), REJECTS)

    return [reconciles_with_journal, no_conflicting_duplicates, rejects_within_budget]
