"""The three per-window checks of ``competition_fill_events``, as plain outcomes.

The reconciliation also checks that the window's per-wallet totals (what the standings read) are
its rows' sums: one more aggregate over the window's rows it compares anyway.

What each check finds is decided here, from the store and the source alone; the Dagster layer
(``defs/checks.py``) turns an :class:`Outcome` into a check result or evaluation for the window's
partition. No Dagster here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from competition_pipeline.fills.source import FillSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import reconcile_window
from competition_pipeline.store.database import TOTAL_COLUMNS, CompetitionStore

RECONCILES = "reconciles_with_journal"
NO_CONFLICTS = "no_conflicting_duplicates"
REJECTS = "rejects_within_budget"
#: Check name -> blocking (a failed ERROR evaluation stops downstream).
BLOCKING = {RECONCILES: True, NO_CONFLICTS: False, REJECTS: False}


def _mismatch(row: tuple) -> str:
    """One wallet's totals against its rows' sums: the columns that differ, stored -> rows."""
    wallet, *pairs = row
    parts = [
        f"{name} {stored} -> {rows}"
        for name, stored, rows in zip(TOTAL_COLUMNS, pairs[::2], pairs[1::2], strict=True)
        if stored != rows
    ]
    return f"{wallet}: {', '.join(parts)}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One check of one window: ``error`` False means a failure is a warning only."""

    passed: bool
    metadata: dict[str, Any]
    error: bool = True
    #: What a failure means and what to do about it (shown with the check's result).
    description: str | None = None


@dataclass
class WindowChecker:
    """Evaluates the checks of any window against one store (and, to reconcile, one source)."""

    store: CompetitionStore
    source: FillSource | None = None
    #: Rejects above this make ``rejects_within_budget`` an error instead of a warning.
    rejects_error_threshold: int | None = None

    def outcome(self, name: str, window: Window) -> Outcome:
        evaluate: dict[str, Callable[[Window], Outcome]] = {
            RECONCILES: self.reconciles_with_journal,
            NO_CONFLICTS: self.no_conflicting_duplicates,
            REJECTS: self.rejects_within_budget,
        }
        return evaluate[name](window)

    def reconciles_with_journal(self, window: Window) -> Outcome:
        assert self.source is not None
        result = reconcile_window(self.source, self.store, window)
        hint = None
        if not result.exact:
            hint = (
                f"window {window.key}: {result.missing} missing, {result.unexpected} unexpected,"
                f" {result.changed} changed rows against the journal. A re-run records what is"
                " missing but never rewrites a stored row; to see what the current rules would"
                f" change, run a rebuild dry run: competition-pipeline rebuild --from {window.key}"
                f" --to {window.key}"
            )
        mismatches = self.store.totals_mismatches(window)
        if mismatches:
            totals_hint = (
                f"window {window.key}: the per-wallet totals the standings read differ from its"
                f" rows for {len(mismatches)} wallets (stored -> rows: {_mismatch(mismatches[0])})."
                " Every load, rebuild and retention writes them with the rows, so the rows were"
                " changed outside the pipeline; the standings of a competition over this window"
                " are wrong until they agree: competition-pipeline competition recount-totals"
                f" {window.key} (as the tables' owner), then refresh the standings"
            )
            hint = totals_hint if hint is None else f"{hint}\n\n{totals_hint}"
        return Outcome(
            result.exact and not mismatches,
            {
                "totals_mismatched_wallets": len(mismatches),
                "totals_mismatch_sample": "\n".join(_mismatch(m) for m in mismatches[:5]),
                "expected_rows": result.expected_rows,
                "stored_rows": result.stored_rows,
                "missing": result.missing,
                "unexpected": result.unexpected,
                "missing_sample": str(result.missing_sample),
                "unexpected_sample": str(result.unexpected_sample),
                "changed": result.changed,
                "changed_sample": str(result.changed_sample),
                "changed_fields": "\n".join(result.changed_fields),
                "compared_by": result.compared_by,
            },
            description=hint,
        )

    def no_conflicting_duplicates(self, window: Window) -> Outcome:
        rows = self.store.window_conflicts(window)
        sample = [f"{f}:{n} trade {t} {w} ({d})" for f, n, t, w, d in rows[:5]]
        return Outcome(not rows, {"conflicts": len(rows), "sample": "\n".join(sample)})

    def rejects_within_budget(self, window: Window) -> Outcome:
        assert self.rejects_error_threshold is not None
        by_reason, samples = self.store.window_rejects(window)
        not_stored = self.store.window_rejects_not_stored(window)
        total = sum(by_reason.values()) + not_stored
        threshold = self.rejects_error_threshold
        metadata = {
            "rejects": total,
            "rejects_not_stored": not_stored,  # counted, beyond the window's stored bound
            "error_threshold": threshold,
            "by_reason": by_reason,  # a mapping: shown as JSON
            "samples": "\n".join(f"{f}:{n} {r}" for f, n, r in samples),
        }
        return Outcome(total == 0, metadata, error=total > threshold)
