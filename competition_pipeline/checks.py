"""Per-window asset checks on ``competition_fill_events``: provably equal to the journal.

* ``reconciles_with_journal`` (ERROR, blocking): re-reads the window from the source and compares,
  by key, the rows its valid fills give (minus recorded conflicts) with the rows stored for it.
* ``no_conflicting_duplicates`` (ERROR): no conflict recorded for the window.
* ``rejects_within_budget``: WARN when the window has rejects, ERROR above the threshold.

In a backfill run (a partition range) each check evaluates every window of the range and reports
the range as one result, naming the windows that failed.
"""

import warnings
from collections.abc import Callable

import dagster as dg

from competition_pipeline.assets import competition_fill_events, fill_partitions
from competition_pipeline.pipeline import reconcile_window
from competition_pipeline.resources import CompetitionDatabase, FillSourceResource, RecordingPolicy
from competition_pipeline.windows import Window, windows_between

# Partitioned asset checks are "preview" in Dagster 1.13; the per-window checks rely on them.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


def _windows(context: dg.AssetCheckExecutionContext) -> list[Window]:
    time_window = context.partition_time_window
    return windows_between(time_window.start, time_window.end)


def _per_window(
    context: dg.AssetCheckExecutionContext, evaluate: Callable[[Window], tuple[bool, dict]]
) -> tuple[bool, dict]:
    """Evaluate every window of the run; one window's details, or a range's failures."""
    windows = _windows(context)
    failed, metadata = [], {}
    for window in windows:
        passed, details = evaluate(window)
        if not passed:
            failed.append(window.key)
        if len(windows) == 1 or not passed:
            metadata.update(details if len(windows) == 1 else {f"{window.key}": str(details)})
    if len(windows) > 1:
        metadata["windows_checked"] = len(windows)
        metadata["windows_failed"] = ", ".join(failed) or "none"
    return not failed, metadata


@dg.asset_check(
    asset=competition_fill_events,
    name="reconciles_with_journal",
    blocking=True,
    partitions_def=fill_partitions,
    description="The window's valid journal fills give exactly the stored rows (by key).",
)
def reconciles_with_journal(
    context: dg.AssetCheckExecutionContext,
    database: CompetitionDatabase,
    journal: FillSourceResource,
) -> dg.AssetCheckResult:
    store, source = database.store(), journal.source()

    def evaluate(window: Window) -> tuple[bool, dict]:
        result = reconcile_window(source, store, window)
        return result.exact, {
            "expected_rows": result.expected_rows,
            "stored_rows": result.stored_rows,
            "missing": result.missing,
            "unexpected": result.unexpected,
            "missing_sample": str(result.missing_sample),
            "unexpected_sample": str(result.unexpected_sample),
        }

    passed, metadata = _per_window(context, evaluate)
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


@dg.asset_check(
    asset=competition_fill_events,
    name="no_conflicting_duplicates",
    partitions_def=fill_partitions,
    description="No message of the window had the key of a recorded fill with other content.",
)
def no_conflicting_duplicates(
    context: dg.AssetCheckExecutionContext, database: CompetitionDatabase
) -> dg.AssetCheckResult:
    store = database.store()

    def evaluate(window: Window) -> tuple[bool, dict]:
        rows = store.window_conflicts(window)
        sample = [f"{f}:{n} trade {t} {w} ({d})" for f, n, t, w, d in rows[:5]]
        return not rows, {"conflicts": len(rows), "sample": "\n".join(sample)}

    passed, metadata = _per_window(context, evaluate)
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


@dg.asset_check(
    asset=competition_fill_events,
    name="rejects_within_budget",
    partitions_def=fill_partitions,
    description="WARN when the window quarantined rejects; ERROR above the configured threshold.",
)
def rejects_within_budget(
    context: dg.AssetCheckExecutionContext, database: CompetitionDatabase, policy: RecordingPolicy
) -> dg.AssetCheckResult:
    store = database.store()
    worst = dg.AssetCheckSeverity.WARN

    def evaluate(window: Window) -> tuple[bool, dict]:
        nonlocal worst
        by_reason, samples = store.window_rejects(window)
        total = sum(by_reason.values())
        if total > policy.rejects_error_threshold:
            worst = dg.AssetCheckSeverity.ERROR
        return total == 0, {
            "rejects": total,
            "error_threshold": policy.rejects_error_threshold,
            "by_reason": dg.MetadataValue.json(by_reason),
            "samples": "\n".join(f"{f}:{n} {r}" for f, n, r in samples),
        }

    passed, metadata = _per_window(context, evaluate)
    return dg.AssetCheckResult(passed=passed, severity=worst, metadata=metadata)
