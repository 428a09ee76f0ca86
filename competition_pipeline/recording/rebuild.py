"""Rebuild recorded windows with the current rules: a dry run's diff, or an audited replace.

When to use which: a normal run, re-run or backfill of the asset records what is not recorded
yet and never rewrites a stored row (the contract's first-version rule is the engine's, and a
journal carrying two versions of one fill stays a conflict). A rebuild is for a change of *this
code's* rules (``RECORDING_VERSION``): it re-reads each window's journal with the current code
and shows what would change; applied, it replaces each window atomically and keeps every row it
superseded, and an undo puts them back. The operation and its SQL are ``store/rebuild.py``; this
module reads the journal for it and decides what may be done. No Dagster here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from competition_pipeline.fills.source import FillSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import (
    RECORDING_VERSION,
    ParseCounts,
    parse_window,
    window_report,
)
from competition_pipeline.recording.prefetch import prefetched
from competition_pipeline.store.database import CompetitionStore, LoadCounts, StoredCounts
from competition_pipeline.store.rebuild import (
    RebuildError,
    RebuildSession,
    StandingChange,
    WindowDiff,
    standing_changes,
)
from competition_pipeline.store.standings import Competitions
from competition_pipeline.store.summary import WindowSummary

__all__ = ["RebuildError", "RebuildReport", "new_id", "rebuild_windows", "undo_rebuild"]

#: The environment variable an apply or an undo needs (the tables' owner role).
OWNER_URL = "COMPETITION_OWNER_DATABASE_URL"


def new_id(kind: str) -> str:
    """An id for a rebuild or undo run outside Dagster (a Dagster run uses its run id)."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


@dataclass
class RebuildReport:
    """What a rebuild found (dry run) or did (applied), window by window."""

    rebuild_id: str
    applied: bool
    reason: str | None
    windows: list[WindowDiff] = field(default_factory=list)
    #: Windows not rebuilt, with why (no journal data).
    refused: dict[str, str] = field(default_factory=dict)
    standings: list[StandingChange] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> list[WindowDiff]:
        return [w for w in self.windows if not w.unchanged]

    #: The diff's table: one row per window (the CLI prints it aligned, the run's metadata as
    #: Markdown).
    COLUMNS = (
        "window",
        "version",
        "stored",
        "derived",
        "added",
        "removed",
        "changed",
        "fields",
        "rejects",
        "conflicts",
    )

    def table(self) -> list[tuple[str, ...]]:
        def counts(diff: Any) -> str:
            return "=" if not diff.any else f"+{diff.added} -{diff.removed} ~{diff.changed}"

        rows = []
        for w in self.windows:
            fields = ", ".join(f"{name} {n}" for name, n in w.changed_by_field.items())
            rows.append(
                (
                    w.window.key,
                    f"{w.version_from} -> {w.version_to}",
                    str(w.rows_stored),
                    str(w.rows_derived),
                    str(w.added),
                    str(w.removed),
                    str(w.changed),
                    fields or ("retired: restored" if w.retired else "-"),
                    counts(w.rejects),
                    counts(w.conflicts),
                )
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "rebuild_id": self.rebuild_id,
            "applied": self.applied,
            "reason": self.reason,
            "windows": [w.as_dict() for w in self.windows],
            "refused": self.refused,
            "standings": [s.describe() for s in self.standings],
            "seconds": round(self.seconds, 3),
        }


def _no_data(source: FillSource, windows: Sequence[Window]) -> dict[str, str]:
    return {
        w.key: (
            f"no journal data for window {w.key} (no segment in its date=/hour= directory, or"
            " its journal was retired): nothing to derive it from; a rebuild never empties a"
            " window because its journal is gone"
        )
        for w in windows
        if source.has_data(w) is False
    }


def rebuild_windows(
    source: FillSource,
    store: CompetitionStore,
    windows: Sequence[Window],
    *,
    apply: bool = False,
    reason: str | None = None,
    rebuild_id: str | None = None,
    sample: int = 5,
) -> RebuildReport:
    """Re-derive ``windows`` from ``source`` with the current rules and diff them against the
    stored rows; with ``apply``, replace each changed window in one transaction (``store`` must
    then be the tables' owner: see :data:`OWNER_URL`).

    A dry run writes nothing (its transactions are READ ONLY). An apply is refused before any
    window is touched when ``reason`` is empty, when a window has no journal data, or when the
    role lacks the rights; an unchanged window is not touched.
    """
    started = time.perf_counter()
    if apply and not (reason or "").strip():
        raise RebuildError("an applied rebuild needs a reason (--reason '...'): it is audited")
    report = RebuildReport(rebuild_id or new_id("rebuild"), apply, reason)
    report.refused = _no_data(source, windows)
    if apply and report.refused:
        raise RebuildError("; ".join(report.refused.values()) + ": nothing was applied")
    with closing(store.connect()) as conn, store.wrap_errors("database error in"):
        competitions = _overlapping(store, windows)
        session = RebuildSession(conn, store.ensure_month)
        if apply:
            missing = session.missing_privileges()
            if missing:
                raise RebuildError(
                    f"applying a rebuild replaces rows, which this role of {store.display_url}"
                    f" may not ({', '.join(missing)}): set {OWNER_URL} to the tables' owner"
                    " (the role `competition-pipeline schema` runs as); the recorder keeps"
                    " SELECT and INSERT only"
                )
        edges = session.edge_windows(competitions)
        for window in windows:
            if window.key not in report.refused:
                diff = _window(session, source, window, report, sample, competitions, edges)
                if diff is not None:
                    report.windows.append(diff)
        # The range's windows before and after, the rest as one snapshot has it.
        report.standings = standing_changes(*session.standing_effect(competitions))
    if apply and report.changed:
        # The stored standings follow at once (the standings sensor would, a tick later).
        for competition_id in competitions:
            Competitions(store).refresh(competition_id)
    report.seconds = time.perf_counter() - started
    return report


def _window(
    session: RebuildSession,
    source: FillSource,
    window: Window,
    report: RebuildReport,
    sample: int,
    competitions: Sequence[str],
    edges: set[Window],
) -> WindowDiff | None:
    """One window's diff (applied when the report is), or None when its source gave nothing
    while rows are stored for it (refused: the stream may have lost what the journal check
    cannot see; a rebuild never empties a window because its source is gone). When
    ``competitions`` overlap the range, the window's standings inputs before and after are kept
    for the standings effect (rows too when it is one of ``edges``, a partial window)."""
    with session.window(window, apply=report.applied) as rebuild:
        parse = parse_window(source, window)
        # Parsed a batch ahead in a thread, as a recording is: the parse overlaps the COPY.
        with closing(prefetched(iter(parse))) as batches:
            for rows, rejects in batches:
                rebuild.stage_rows(rows)
                rebuild.stage_rejects(rejects)
        read = parse.counts
        assert read is not None  # every batch was consumed
        diff = rebuild.diff(RECORDING_VERSION, sample)
        if read.lines_read == 0 and diff.rows_stored > 0:
            report.refused[window.key] = (
                f"{source.describe()} gave no message for window {window.key}, which holds"
                f" {diff.rows_stored} rows: nothing to derive it from; a rebuild never empties a"
                " window because its source is gone"
            )
            return None
        if competitions:  # before any apply: the window's totals as they were
            rebuild.keep_for_standings(edge=window in edges)
        if report.applied and not diff.unchanged:
            assert report.reason is not None
            rebuild.apply(
                rebuild_id=report.rebuild_id,
                reason=report.reason,
                source=source.describe(),
                extent=read.stats.extent,
                summary=_summary(source.describe(), window, read, diff).to_json(),
            )
    return diff


def _summary(source: str, window: Window, read: ParseCounts, diff: WindowDiff) -> WindowSummary:
    """The window's summary after the replace: as a first recording of today's journal."""
    as_loaded = LoadCounts(
        rows_inserted=diff.rows_derived,
        rows_already_present=0,
        conflict_messages=diff.conflict_messages,
        conflicts_recorded=diff.conflict_messages,
        rejects_recorded=diff.rejects_derived,
    )
    stored = StoredCounts(diff.rows_derived, diff.rejects_derived, diff.conflict_rows)
    return WindowSummary.of_load(
        window_report(source, window, read, as_loaded, rows_stored=diff.rows_derived),
        version=RECORDING_VERSION,
        positions=read.stats.positions,
        stored=stored,
        rows_digest=diff.digest_after,
    )


def _overlapping(store: CompetitionStore, windows: Sequence[Window]) -> list[str]:
    if not windows:
        return []
    first, last = min(windows, key=lambda w: w.start), max(windows, key=lambda w: w.start)
    return Competitions(store).active_overlapping(first.start, last.end)


def undo_rebuild(
    store: CompetitionStore, rebuild_id: str, *, reason: str, undo_id: str | None = None
) -> list[dict[str, Any]]:
    """Restore every window ``rebuild_id`` replaced, each atomically, from the rows it kept;
    audited as a rebuild of kind ``undo`` (``undo_id``)."""
    if not (reason or "").strip():
        raise RebuildError("an undo needs a reason (--reason '...'): it is audited")
    with closing(store.connect()) as conn, store.wrap_errors("database error in"):
        session = RebuildSession(conn, store.ensure_month)
        missing = session.missing_privileges()
        if missing:
            raise RebuildError(
                f"undoing a rebuild replaces rows, which this role of {store.display_url} may not"
                f" ({', '.join(missing)}): set {OWNER_URL} to the tables' owner"
            )
        return session.undo(rebuild_id, undo_id or new_id("undo"), reason)
