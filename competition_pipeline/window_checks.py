"""The three per-window checks of ``competition_fill_events`` as plain evaluations.

Shared by the asset-check steps (``checks.py``: one window, or a range executed from the UI) and by
ranged runs of the asset itself: a backfill (``BackfillPolicy.single_run``) reports each window
as its own ``AssetMaterialization`` and yields no output, so Dagster skips the check steps of such
a run; the asset then evaluates the run's selected checks for each window as it commits, and
yields them as ``AssetCheckEvaluation`` events with the window as partition. Either way each
window gets its own result in the check's partition view, and a failed blocking evaluation
fails the step (no downstream step runs).

Kept apart from ``checks.py`` so that ``assets.py`` can use it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from competition_pipeline.dagster_internals import AssetCheckEvaluationTargetMaterializationData
from competition_pipeline.partitions import FILL_EVENTS_KEY
from competition_pipeline.pipeline import reconcile_window
from competition_pipeline.resources import CompetitionDatabase, FillSourceResource, RecordingPolicy
from competition_pipeline.store import CompetitionStore
from competition_pipeline.windows import Window

RECONCILES = "reconciles_with_journal"
NO_CONFLICTS = "no_conflicting_duplicates"
REJECTS = "rejects_within_budget"
#: Check name -> blocking (a failed ERROR evaluation stops downstream).
BLOCKING = {RECONCILES: True, NO_CONFLICTS: False, REJECTS: False}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One check of one window."""

    passed: bool
    metadata: dict[str, Any]
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


@dataclass
class WindowChecks:
    """Evaluates the checks of any window; store and source are made once, on first use."""

    database: CompetitionDatabase
    fill_source: FillSourceResource | None = None
    policy: RecordingPolicy | None = None
    #: Where the window's latest materialization is looked up, so that each evaluation names the
    #: materialization it checked: only such an evaluation counts as the partition's current
    #: status in the check's partition view (without it the view shows the window "missing").
    instance: dg.DagsterInstance | None = None
    _store: CompetitionStore | None = field(default=None, init=False, repr=False)

    @property
    def store(self) -> CompetitionStore:
        if self._store is None:
            self._store = self.database.store()
        return self._store

    @contextmanager
    def shared_connection(self) -> Iterator[None]:
        """Checks of many windows (a backfill) on one database connection."""
        with self.store.shared_connection():
            yield

    def outcome(self, name: str, window: Window) -> Outcome:
        evaluate: dict[str, Callable[[Window], Outcome]] = {
            RECONCILES: self.reconciles_with_journal,
            NO_CONFLICTS: self.no_conflicting_duplicates,
            REJECTS: self.rejects_within_budget,
        }
        return evaluate[name](window)

    def evaluation(
        self,
        name: str,
        window: Window,
        target: AssetCheckEvaluationTargetMaterializationData | None = None,
    ) -> dg.AssetCheckEvaluation:
        """``name`` on ``window`` as an event for the window's partition, tied to ``target`` (the
        window's latest materialization; looked up when not given)."""
        outcome = self.outcome(name, window)
        return dg.AssetCheckEvaluation(
            asset_key=FILL_EVENTS_KEY,
            check_name=name,
            passed=outcome.passed,
            metadata=outcome.metadata,
            severity=outcome.severity,
            blocking=BLOCKING[name],
            partition=window.key,
            target_materialization_data=target or self._target(window),
        )

    def _target(self, window: Window) -> AssetCheckEvaluationTargetMaterializationData | None:
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

    def evaluations(
        self, names: Iterable[str], window: Window
    ) -> Iterator[dg.AssetCheckEvaluation]:
        # The window's latest materialization, looked up once for all its checks: each lookup is
        # an event-log query (about 20 ms on PostgreSQL instance storage), paid per window.
        target = self._target(window)
        for name in names:
            yield self.evaluation(name, window, target)

    def reconciles_with_journal(self, window: Window) -> Outcome:
        assert self.fill_source is not None
        result = reconcile_window(self.fill_source.source(), self.store, window)
        return Outcome(
            result.exact,
            {
                "expected_rows": result.expected_rows,
                "stored_rows": result.stored_rows,
                "missing": result.missing,
                "unexpected": result.unexpected,
                "missing_sample": str(result.missing_sample),
                "unexpected_sample": str(result.unexpected_sample),
                "changed": result.changed,
                "changed_sample": str(result.changed_sample),
                "compared_by": result.compared_by,
            },
        )

    def no_conflicting_duplicates(self, window: Window) -> Outcome:
        rows = self.store.window_conflicts(window)
        sample = [f"{f}:{n} trade {t} {w} ({d})" for f, n, t, w, d in rows[:5]]
        return Outcome(not rows, {"conflicts": len(rows), "sample": "\n".join(sample)})

    def rejects_within_budget(self, window: Window) -> Outcome:
        assert self.policy is not None
        by_reason, samples = self.store.window_rejects(window)
        total = sum(by_reason.values())
        threshold = self.policy.rejects_error_threshold
        severity = dg.AssetCheckSeverity.ERROR if total > threshold else dg.AssetCheckSeverity.WARN
        metadata = {
            "rejects": total,
            "error_threshold": threshold,
            "by_reason": dg.MetadataValue.json(by_reason),
            "samples": "\n".join(f"{f}:{n} {r}" for f, n, r in samples),
        }
        return Outcome(total == 0, metadata, severity)


def selected_checks(context: dg.AssetExecutionContext) -> list[str]:
    """The checks of ``competition_fill_events`` that this run includes (the job's checks, or the
    run's check selection), in a fixed order."""
    keys = set(context.job_def.asset_layer.asset_graph.asset_check_keys)
    if context.run.asset_check_selection is not None:
        keys &= set(context.run.asset_check_selection)
    names = {key.name for key in keys if key.asset_key == FILL_EVENTS_KEY}
    return [name for name in BLOCKING if name in names]
