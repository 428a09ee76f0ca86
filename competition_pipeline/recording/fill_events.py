"""Record one window: source -> contract -> rows -> store, with the counts that prove it exact.

This is the whole recording path without Dagster; the asset is a thin wrapper around
:func:`record_window`, and tests and the benchmark call it directly too.

The open hour's follower, which loads a window again and again from its committed offsets, is
:mod:`~competition_pipeline.recording.live_hour`; each of its loads is :func:`_load` too.

Accounting identity (checked by :meth:`WindowReport.balanced`): every complete line read is exactly
one of a fill recorded or already present, a skipped message, a reject, or a conflict; an
unterminated tail of a plain segment is counted apart, and read on a later run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace

from competition_pipeline.errors import TerminalError
from competition_pipeline.fills.contract import SKIPPED, Fill, parse_line
from competition_pipeline.fills.rows import RejectRow, Row, fill_rows, reject_row
from competition_pipeline.fills.source import FillSource, LongLine, ReadStats
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.prefetch import prefetched
from competition_pipeline.store.database import (
    CompetitionStore,
    Fence,
    LoadCounts,
    LoadSession,
    PreviousLoad,
    Reconciliation,
)
from competition_pipeline.store.summary import WindowSummary
from competition_pipeline.window_report import WindowReport


class RejectBudgetExceeded(TerminalError):
    """Strict mode: the window has more rejects than allowed; nothing of it was committed."""


@dataclass(frozen=True, slots=True)
class RejectBudget:
    """Strict mode: fail a window whose rejects exceed a count or a fraction of its lines."""

    max_rejects: int | None = None
    max_fraction: float | None = None

    def violation(self, rejects: int, lines: int) -> str | None:
        if self.max_rejects is not None and rejects > self.max_rejects:
            return f"{rejects} rejects exceed the limit of {self.max_rejects}"
        if self.max_fraction is not None and lines and rejects / lines > self.max_fraction:
            return f"{rejects} rejects of {lines} lines exceed the fraction {self.max_fraction}"
        return None


@dataclass(frozen=True, slots=True)
class ParseCounts:
    """What parsing one window's messages counted, and what the source's read saw (``stats``)."""

    lines_read: int
    fills_read: int
    skipped_messages: int
    rejects: int
    newest_fill_ms: int | None
    stats: ReadStats


class WindowParse:
    """One window's messages parsed: iterated, its (wallet rows, rejects) per batch; then
    :attr:`counts`, what the parse counted (set once, when the last batch has been given)."""

    def __init__(
        self,
        source: FillSource,
        window: Window,
        extent: Mapping[str, int] | None = None,
        since: Mapping[str, dict] | None = None,
    ) -> None:
        self._source, self._window, self._extent, self._since = source, window, extent, since
        self.counts: ParseCounts | None = None

    def __iter__(self) -> Iterator[tuple[list[Row], list[RejectRow]]]:
        window, stats = self._window, ReadStats()
        start_ms, end_ms = window.start_ms, window.end_ms
        check_window = self._source.files_by_window
        seq = lines = fills = skipped = rejected = 0
        newest = -1
        for batch in self._source.read_window(window, stats, self._extent, self._since):
            rows: list[Row] = []
            rejects: list[RejectRow] = []
            origin = batch.origin
            for line_no, data in batch.records:
                seq += 1
                if type(data) is LongLine:  # over the contract's limit: never held, never parsed
                    rejects.append(reject_row(origin, line_no, data.excerpt, data.reason()))
                    continue
                result = parse_line(data)
                if type(result) is Fill:
                    ts = result.timestamp_ms
                    if check_window and not start_ms <= ts < end_ms:
                        rejects.append(reject_row(origin, line_no, data, window.misfiled(ts)))
                        continue
                    newest = max(newest, ts)
                    rows.extend(fill_rows(result, seq, origin, line_no))
                    fills += 1
                elif result is SKIPPED:
                    skipped += 1
                else:
                    rejects.append(reject_row(origin, line_no, data, result.reason))  # type: ignore[union-attr]
            lines += len(batch.records)
            rejected += len(rejects)
            yield rows, rejects
        self.counts = ParseCounts(
            lines, fills, skipped, rejected, newest if newest >= 0 else None, stats
        )


def parse_window(
    source: FillSource,
    window: Window,
    extent: Mapping[str, int] | None = None,
    *,
    since: Mapping[str, dict] | None = None,
) -> WindowParse:
    """The window's messages as (wallet rows, rejects) per batch (``extent``: exactly what an
    earlier read saw; ``since``: only what came after the committed positions)."""
    return WindowParse(source, window, extent, since)


def window_report(
    source: str,
    window: Window,
    parsed: ParseCounts,
    load: LoadCounts,
    *,
    rows_stored: int,
    rejects_not_stored: int = 0,
    seconds: float = 0.0,
) -> WindowReport:
    """A load's report, composed from what its steps returned: the parse's counts (and its
    source's read), the load's counts, the rows the window holds once it committed."""
    stats = parsed.stats
    return WindowReport(
        window=window.key,
        source=source,
        lines_read=parsed.lines_read,
        fills_read=parsed.fills_read,
        fills_recorded_or_present=parsed.fills_read - load.conflict_messages,
        skipped_messages=parsed.skipped_messages,
        rejects=parsed.rejects,
        rejects_new=load.rejects_recorded,
        rejects_not_stored=rejects_not_stored,
        conflicts=load.conflict_messages,
        conflicts_new=load.conflicts_recorded,
        incomplete_tails=stats.incomplete_tails,
        rows_inserted=load.rows_inserted,
        rows_already_present=load.rows_already_present,
        segments=stats.segments,
        bytes_read=stats.bytes_read,
        newest_fill_ms=parsed.newest_fill_ms,
        seconds=seconds,
        ignored_files=stats.ignored,
        stream_complete=stats.complete,
        incremental=stats.incremental,
        rewritten_segments=list(stats.rewritten),
        rows_stored=rows_stored,
    )


#: Kept with every window's committed offsets: bump it when parsing or row building changes what
#: the same bytes give, or how the rows' digest is computed, so that windows recorded by older code
#: are read again in full (3: the digest hashes the row's fields, no longer its text).
RECORDING_VERSION = 3
#: Rows staged per round at least (a window's last round may be smaller).
STAGE_ROWS = 20_000
#: Rejects stored per window at most (each keeps at most 64 KiB of its line, so at most 64 MiB a
#: window). Beyond it rejects are counted, not stored: ``rejects`` counts them all (the strict
#: mode's budget and ``rejects_within_budget`` see every one), ``rejects_not_stored`` says how many
#: are only counted, in the run's metadata, a warning in its log and the window's summary.
MAX_STORED_REJECTS = 1_000


def _resume_from(before: PreviousLoad | None) -> dict[str, dict] | None:
    """The committed offsets a load may continue from: only when the window still holds what
    that load left (a deleted row sends it down the full path) and the recording version is
    today's."""
    if before is None or not before.intact:
        return None
    if before.summary.version != RECORDING_VERSION:
        return None
    return before.positions


@dataclass(slots=True)
class _Parsed:
    """A parsed batch of a window, or (``last``) the end of the window's read, with its
    ``counts`` (none when ``unchanged``)."""

    window: Window
    rows: list[Row] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    last: bool = False
    unchanged: bool = False  # the source is as the latest load left it: nothing was parsed
    counts: ParseCounts | None = None


def _parse_windows(
    source: FillSource, windows: list[Window], previous: Mapping[Window, PreviousLoad]
) -> Iterator[_Parsed]:
    """Every window's batches in order, then its end marker. A window is read from its committed
    offsets (only what was appended since); one whose data is as its latest load left it is
    announced without being read."""
    for window in windows:
        since = _resume_from(previous.get(window))
        if since is not None and source.unchanged(window, since):
            yield _Parsed(window, last=True, unchanged=True)
            continue
        parse = parse_window(source, window, since=since)
        for rows, rejects in parse:
            yield _Parsed(window, rows, rejects)
        yield _Parsed(window, last=True, counts=parse.counts)


def record_windows(
    source: FillSource,
    store: CompetitionStore,
    windows: list[Window],
    *,
    reject_budget: RejectBudget | None = None,
) -> Iterator[WindowReport]:
    """Record ``windows`` in order, each in its own transaction, yielding each one's report once
    it has committed (a failure part way keeps the windows before it).

    One connection serves them all, and the parser runs ahead in a thread across window
    boundaries, so a backfill of many small windows pays little more per window than its rows.
    A window is read from the offsets its latest load committed (a growing open hour costs what
    was appended); one whose data and stored rows are as that load left them is not read at all:
    its report repeats the window's totals with ``unchanged`` set and nothing is written. A window
    retention took out is neither read nor written: its report has ``retired`` set.
    """
    previous = store.previous_loads(windows)
    retired = store.retired_windows(windows)
    todo = [w for w in windows if w not in retired]
    with (
        store.session() as session,
        closing(prefetched(_parse_windows(source, todo, previous))) as parsed,
    ):
        for window in windows:
            if window in retired:  # restored only by an explicit, audited rebuild
                yield WindowReport(window=window.key, source=source.describe(), retired=True)
                continue
            started = time.perf_counter()
            item = next(parsed)
            if item.unchanged:
                report = _unchanged_report(previous[window], time.perf_counter() - started)
                _check_budget(report.window, report.rejects, report.lines_read, reject_budget)
                yield report
                continue
            yield _load(session, source, item, parsed, previous.get(window), reject_budget, started)


def _load(
    session: LoadSession,
    source: FillSource,
    first: _Parsed,
    parsed: Iterator[_Parsed],
    before: PreviousLoad | None,
    reject_budget: RejectBudget | None,
    started: float,
    fence: Fence | None = None,
) -> WindowReport:
    """Stage the window's batches (``first``, then ``parsed`` up to its end marker), commit, and
    compose the load's report from what the parse, the load and the store returned."""
    window = first.window
    stored_before = before.stored.rejects if before is not None and before.stored else 0
    room = max(0, MAX_STORED_REJECTS - stored_before)  # re-staged rejects already stored count too
    not_stored = 0
    with session.window(window, fence) as load:
        # Small batches (one per segment of a quiet hour) are staged together: each staging
        # round costs several statements whatever its size.
        pending: list[Row] = []
        item = first
        while not item.last:
            rows, rejects = item.rows, item.rejects
            if pending:
                pending.extend(rows)
            else:
                pending = rows
            if len(pending) >= STAGE_ROWS:
                load.stage_rows(pending)
                pending = []
            if rejects:
                kept = rejects[:room]
                room -= len(kept)
                not_stored += len(rejects) - len(kept)
                if kept:
                    load.stage_rejects(kept)
            item = next(parsed)  # after staging: the parser works ahead meanwhile
        load.stage_rows(pending)
        parse = item.counts
        assert parse is not None  # the end marker of a window that was read
        _check_budget(window.key, parse.rejects, parse.lines_read, reject_budget)
        counts = load.finish()
        seconds = time.perf_counter() - started
        stored = load.stored_after(counts)
        report = window_report(
            source.describe(),
            window,
            parse,
            counts,
            rows_stored=stored.rows,
            rejects_not_stored=not_stored,
            seconds=seconds,
        )
        stats = parse.stats
        summary = WindowSummary.of_load(
            report,
            version=RECORDING_VERSION,
            positions=stats.positions,
            stored=stored,
            rows_digest=load.rows_digest,
        )
        if stats.incremental and before is not None:
            summary = summary.after(before.summary)
        load.save_window(report.source, stats.extent, summary.to_json())
    return report


def _check_budget(
    window: str, rejects: int, lines: int, reject_budget: RejectBudget | None
) -> None:
    if reject_budget is not None:
        violation = reject_budget.violation(rejects, lines)
        if violation:
            raise RejectBudgetExceeded(f"window {window}: {violation} (strict mode)")


def _unchanged_report(before: PreviousLoad, seconds: float) -> WindowReport:
    """The window's totals, as a re-run that found every row already present reports them."""
    totals = before.summary.totals
    return replace(
        totals,
        rows_already_present=totals.rows_already_present + totals.rows_inserted,
        rows_inserted=0,
        rejects_new=0,
        conflicts_new=0,
        bytes_read=0,
        seconds=seconds,
        unchanged=True,
        rows_stored=before.stored.rows if before.stored else None,
    )


def record_window(
    source: FillSource,
    store: CompetitionStore,
    window: Window,
    *,
    reject_budget: RejectBudget | None = None,
) -> WindowReport:
    """Read ``window`` from ``source`` and record it in ``store`` in one transaction."""
    (report,) = record_windows(source, store, [window], reject_budget=reject_budget)
    return report


def window_totals(store: CompetitionStore, window: Window) -> WindowReport | None:
    """The window's totals over every committed load (the summary the loads added up), as the
    report of its final materialization; None when it was never recorded."""
    previous = store.previous_loads([window]).get(window)
    if previous is None:
        return None
    return replace(
        previous.summary.totals, rows_stored=previous.stored.rows if previous.stored else None
    )


def reconcile_window(source: FillSource, store: CompetitionStore, window: Window) -> Reconciliation:
    """Compare the rows the source gives for ``window`` with the rows stored for it.

    Cheap when nothing changed: the source is checked to still hold what the window's latest load
    read (every committed segment there, unchanged up to its committed offset: the guard hash of
    the bytes before it, so a growing open hour qualifies) and then the digest of the rows the
    loads' parses gave (computed by PostgreSQL over the staged rows, order-independent, added up
    over incremental loads) is compared with the same digest over the rows stored now.
    Otherwise, or when the digests differ, the source is parsed again, to the extent the latest
    load read (nothing when it was never recorded, so data that arrived since is not counted
    missing), and compared row by row, which names the missing, unexpected and changed rows.
    """
    previous = store.previous_loads([window]).get(window)
    if previous is not None and previous.positions is not None and previous.rows_digest:
        if source.holds(window, previous.positions):
            stored = store.window_digest(window)
            if stored == previous.rows_digest:
                return Reconciliation(
                    expected_rows=stored.rows,
                    stored_rows=stored.rows,
                    missing=0,
                    unexpected=0,
                    missing_sample=[],
                    unexpected_sample=[],
                    compared_by="digest",
                )
    extent = previous.extent if previous is not None else {}
    with store.window_comparison(window) as comparison:
        for rows, _ in parse_window(source, window, extent):
            comparison.stage_rows(rows)
        return comparison.reconcile()
