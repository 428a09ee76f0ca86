"""Per-window asset checks on ``competition_fill_events``: provably equal to the journal.

* ``reconciles_with_journal`` (ERROR, blocking): re-reads the window from the source and compares
  the rows its valid fills give (minus recorded conflicts) with the rows stored for it.
* ``no_conflicting_duplicates`` (ERROR): no conflict recorded for the window.
* ``rejects_within_budget``: WARN when the window has rejects, ERROR above the threshold.

What each check finds is ``recording/checks.py``; this module makes Dagster events of it. Every
window gets its own result (its partition in the check's partition view): a run of one window
evaluates it in the check step; a check executed alone over a range evaluates every window of the
range and yields one ``AssetCheckEvaluation`` per window. A ranged run of the asset (a backfill,
``BackfillPolicy.single_run``) reports each window as its own ``AssetMaterialization`` and yields
no output, so Dagster skips the check steps of such a run; the asset step then evaluates the run's
selected checks for each window as it commits (:class:`WindowChecks`), and yields them as
``AssetCheckEvaluation`` events with the window as partition. Either way a failed blocking
evaluation fails the step.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg

from competition_pipeline.defs.dagster_internals import (
    AssetCheckEvaluationTargetMaterializationData,
)
from competition_pipeline.defs.failures import refused
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY, fill_partitions
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.defs.runs import holding_run_lock
from competition_pipeline.defs.stops import StopSignals
from competition_pipeline.fills.windows import Window, windows_between
from competition_pipeline.recording.checks import (
    BLOCKING,
    NO_CONFLICTS,
    RECONCILES,
    REJECTS,
    Outcome,
    WindowChecker,
)
from competition_pipeline.settings import Settings


def _severity(outcome: Outcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if outcome.error else dg.AssetCheckSeverity.WARN


@dataclass
class WindowChecks:
    """The checks of any window as Dagster events; store and source are made once, on first use."""

    database: CompetitionDatabase
    fill_source: FillSourceResource | None = None
    policy: RecordingPolicy | None = None
    #: Where the window's latest materialization is looked up, so that each evaluation names the
    #: materialization it checked: only such an evaluation counts as the partition's current
    #: status in the check's partition view (without it the view shows the window "missing").
    instance: dg.DagsterInstance | None = None
    _checker: WindowChecker | None = field(default=None, init=False, repr=False)

    @property
    def checker(self) -> WindowChecker:
        if self._checker is None:
            self._checker = WindowChecker(
                self.database.store(),
                source=None if self.fill_source is None else self.fill_source.source(),
                rejects_error_threshold=(
                    None if self.policy is None else self.policy.rejects_error_threshold
                ),
            )
        return self._checker

    @contextmanager
    def shared_connection(self) -> Iterator[None]:
        """Checks of many windows (a backfill) on one database connection."""
        with self.checker.store.shared_connection():
            yield

    def result(self, name: str, window: Window) -> dg.AssetCheckResult:
        """``name`` on ``window`` as the result of a check step run for that partition."""
        outcome = self.checker.outcome(name, window)
        return dg.AssetCheckResult(
            passed=outcome.passed,
            metadata=outcome.metadata,
            severity=_severity(outcome),
            description=outcome.description,
        )

    def evaluation(
        self,
        name: str,
        window: Window,
        target: AssetCheckEvaluationTargetMaterializationData | None = None,
    ) -> dg.AssetCheckEvaluation:
        """``name`` on ``window`` as an event for the window's partition, tied to ``target`` (the
        window's latest materialization; looked up when not given)."""
        outcome = self.checker.outcome(name, window)
        return _evaluation(name, window, outcome, target or self._target(window))

    def outcomes(self, names: Iterable[str], window: Window) -> list[tuple[str, Outcome]]:
        """``names`` on ``window`` now (as it has just committed), to be yielded later as
        events with :meth:`evaluations_of`."""
        return [(name, self.checker.outcome(name, window)) for name in names]

    def evaluations_of(
        self, evaluated: list[tuple[Window, list[tuple[str, Outcome]]]]
    ) -> Iterator[dg.AssetCheckEvaluation]:
        """The events of windows' outcomes, each tied to its window's latest materialization,
        looked up for all of them in one event-log query: a lookup costs about 20 ms on
        PostgreSQL instance storage whatever it asks for (two new connections), so a backfill
        pays it per batch of windows, not per window."""
        targets = self._targets([window for window, _ in evaluated])
        for window, outcomes in evaluated:
            for name, outcome in outcomes:
                yield _evaluation(name, window, outcome, targets.get(window.key))

    def _targets(
        self, windows: list[Window]
    ) -> dict[str, AssetCheckEvaluationTargetMaterializationData | None]:
        """Each window's latest materialization (as :meth:`_target`), in one query; a window it
        did not find (older materializations of other windows crowded it out) on its own."""
        if self.instance is None or not windows:
            return {}
        keys = [window.key for window in windows]
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FILL_EVENTS_KEY, asset_partitions=keys),
            limit=4 * len(keys),
        ).records
        targets: dict[str, AssetCheckEvaluationTargetMaterializationData | None] = {}
        for record in records:  # newest first: the first of a partition is its latest
            key = record.partition_key
            if key is not None and key not in targets:
                targets[key] = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                )
        for window in windows:
            if window.key not in targets:
                targets[window.key] = self._target(window)
        return targets

    def _target(self, window: Window) -> AssetCheckEvaluationTargetMaterializationData | None:
        """The window's latest materialization, as the evaluation's target.

        ``AssetCheckEvaluationTargetMaterializationData`` is not exported by ``dagster``: an
        evaluation yielded outside a check step has no public way to name the partition's
        materialization it checked (partitioned asset checks are still preview upstream,
        dagster-io/dagster#17005; how Dagster fills this field for partitions in backfills was
        fixed in dagster-io/dagster#33803). Imported from ``dagster_internals.py`` only.
        """
        if self.instance is None:
            return None
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FILL_EVENTS_KEY, asset_partitions=[window.key]),
            limit=1,
        ).records
        if not records:
            return None
        latest = records[0]
        return AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
        )


def _evaluation(
    name: str,
    window: Window,
    outcome: Outcome,
    target: AssetCheckEvaluationTargetMaterializationData | None,
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=FILL_EVENTS_KEY,
        check_name=name,
        passed=outcome.passed,
        metadata=outcome.metadata,
        severity=_severity(outcome),
        description=outcome.description,
        blocking=BLOCKING[name],
        partition=window.key,
        target_materialization_data=target,
    )


def selected_checks(context: dg.AssetExecutionContext) -> list[str]:
    """The checks of ``competition_fill_events`` that this run includes (the job's checks, or the
    run's check selection), in a fixed order."""
    keys = set(context.job_def.asset_layer.asset_graph.asset_check_keys)
    if context.run.asset_check_selection is not None:
        keys &= set(context.run.asset_check_selection)
    names = {key.name for key in keys if key.asset_key == FILL_EVENTS_KEY}
    return [name for name in BLOCKING if name in names]


CheckEvents = Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output]


def _evaluate(
    context: dg.AssetCheckExecutionContext, checks: WindowChecks, name: str
) -> CheckEvents:
    """One window: its result. A range: one evaluation per window, then the step's output. A
    stop signal meanwhile waits for the check to finish (a check only reads: it is short)."""
    yield from StopSignals().guard(_evaluate_windows(context, checks, name))


def _evaluate_windows(
    context: dg.AssetCheckExecutionContext, checks: WindowChecks, name: str
) -> CheckEvents:
    if context.has_partition_key:
        yield checks.result(name, Window.from_key(context.partition_key))
        return
    if not context.has_partition_key_range:
        raise refused(
            f"{name} checks hourly windows of competition_fill_events: execute it for a"
            " partition (an hour, YYYY-MM-DD-HH:00 UTC, e.g. 2026-11-20-03:00) or a range of"
            " them; from the UI materialize the partition (Materialize..., which runs its"
            " checks with it: Dagster's Checks tab cannot execute a partitioned check alone),"
            " from the CLI add"
            " --partition 2026-11-20-03:00 or --partition-range START...END"
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
