"""Record one window: source -> contract -> rows -> store, with the counts that prove it exact.

This is the whole recording path without Dagster; the asset is a thin wrapper around
:func:`record_window`, and tests and the benchmark call it directly too.

Accounting identity (checked by :meth:`WindowReport.balanced`): every complete line read is exactly
one of a fill recorded or already present, a skipped message, a reject, or a conflict; an
unterminated tail of a plain segment is counted apart, and read on a later run.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields
from queue import Empty, Full, Queue
from typing import NamedTuple, TypeVar

from competition_pipeline.contract import SKIPPED, Fill, parse_line
from competition_pipeline.rows import fill_rows
from competition_pipeline.sources import FillSource, ReadStats
from competition_pipeline.store import (
    CompetitionStore,
    LoadSession,
    PreviousLoad,
    Reconciliation,
    RowsDigest,
    StoredCounts,
)
from competition_pipeline.windows import Window


@dataclass(slots=True)
class WindowReport:
    """What recording one window read, wrote and set aside."""

    window: str
    source: str
    lines_read: int = 0
    fills_read: int = 0
    fills_recorded_or_present: int = 0
    skipped_messages: int = 0
    rejects: int = 0
    rejects_new: int = 0
    conflicts: int = 0
    conflicts_new: int = 0
    incomplete_tails: int = 0
    rows_inserted: int = 0
    rows_already_present: int = 0
    segments: int = 0
    bytes_read: int = 0
    newest_fill_ms: int | None = None
    seconds: float = 0.0
    ignored_files: list[str] = field(default_factory=list)
    stream_complete: bool | None = None  # stream only: past the window's end plus lateness
    unchanged: bool = False  # the data and the stored rows were as the latest load left them
    incremental: bool = False  # read from the committed offsets: only what was appended since
    rewritten_segments: list[str] = field(default_factory=list)  # changed before their offset
    rows_stored: int | None = None  # rows the window holds once this load committed

    @property
    def rows_per_second(self) -> float:
        rows = self.rows_inserted + self.rows_already_present
        return rows / self.seconds if self.seconds > 0 else 0.0

    def balanced(self) -> bool:
        """lines read = fills recorded or present + skipped + rejects + conflicts."""
        return self.lines_read == (
            self.fills_recorded_or_present + self.skipped_messages + self.rejects + self.conflicts
        )

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rows_per_second"] = self.rows_per_second
        return data


class RawText(NamedTuple):
    """A rejected line as storable text, and whether it had to be escaped to be stored."""

    text: str
    escaped: bool


def raw_text(data: bytes) -> RawText:
    """Lossless: valid UTF-8 without NUL is stored as it is; anything else is escaped (``\\`` for
    a backslash, ``\\xNN`` for a byte that is not UTF-8, ``\\x00`` for NUL) and flagged."""
    try:
        text = data.decode("utf-8")
        if "\x00" not in text:
            return RawText(text, False)
    except UnicodeDecodeError:
        pass
    escaped = data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return RawText(escaped.replace("\x00", "\\x00"), True)


def _outside(window: Window, timestamp_ms: int) -> str:
    instant = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return (
        f"timestamp {timestamp_ms} ({instant:%Y-%m-%dT%H:%M:%S.%f}Z) is outside the window "
        f"{window.key} it is filed under"
    )


T = TypeVar("T")


class RejectBudgetExceeded(Exception):
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


RejectRow = tuple[str, int, str, bool, str]  # source_file, line_no, raw_line, escaped, reason


def parse_window(
    source: FillSource,
    window: Window,
    report: WindowReport,
    stats: ReadStats,
    extent: Mapping[str, int] | None = None,
    *,
    since: Mapping[str, dict] | None = None,
) -> Iterator[tuple[list[tuple], list[RejectRow]]]:
    """The window's messages as (wallet rows, rejects) per batch; counts go into ``report``."""
    seq = 0
    start_ms, end_ms = window.start_ms, window.end_ms
    check_window = source.files_by_window
    newest = -1
    for batch in source.read_window(window, stats, extent, since):
        rows: list[tuple] = []
        rejects: list[RejectRow] = []
        origin = batch.origin
        for line_no, data in batch.records:
            seq += 1
            result = parse_line(data)
            if type(result) is Fill:
                ts = result.timestamp_ms
                if check_window and not start_ms <= ts < end_ms:
                    rejects.append((origin, line_no, *raw_text(data), _outside(window, ts)))
                    continue
                newest = max(newest, ts)
                rows.extend(fill_rows(result, seq, origin, line_no))
                report.fills_read += 1
            elif result is SKIPPED:
                report.skipped_messages += 1
            else:
                rejects.append((origin, line_no, *raw_text(data), result.reason))  # type: ignore[union-attr]
        report.lines_read += len(batch.records)
        report.rejects += len(rejects)
        if newest >= 0:
            report.newest_fill_ms = newest
        yield rows, rejects
    report.incomplete_tails = stats.incomplete_tails
    report.segments = stats.segments
    report.bytes_read = stats.bytes_read
    report.ignored_files = stats.ignored
    report.stream_complete = stats.complete


_DONE = object()


def prefetched(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run ``batches`` in a thread, ``depth`` batches ahead (bounded memory).

    Parsing is Python; loading waits on PostgreSQL, which releases the GIL: with the parser a
    batch ahead, the client parses while the server inserts, on the machine's two cores. An
    exception in the parser is raised here, in the consumer; a consumer that stops early stops
    the parser.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        queue.put((item, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer)
            queue.put((_DONE, exc))

    worker = threading.Thread(target=produce, name="parse-window", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass
        worker.join()


#: Kept with every window's committed offsets: bump it when parsing or row building changes what
#: the same bytes give, so that windows recorded by older code are read again in full.
RECORDING_VERSION = 2
#: Rows staged per round at least (a window's last round may be smaller).
STAGE_ROWS = 20_000
#: Counts that add up over a window's loads: an incremental load stores the window's totals.
_ADDITIVE = (
    "lines_read",
    "fills_read",
    "fills_recorded_or_present",
    "skipped_messages",
    "rejects",
    "rejects_new",
    "conflicts",
    "conflicts_new",
    "rows_inserted",
    "rows_already_present",
    "bytes_read",
)


def _resume_from(before: PreviousLoad | None) -> dict[str, dict] | None:
    """The committed offsets a load may continue from: only when the window still holds what
    that load left (a deleted row sends it down the full path) and the recording version is
    today's."""
    if before is None or not before.intact or before.summary.get("version") != RECORDING_VERSION:
        return None
    return before.positions


@dataclass(slots=True)
class _Parsed:
    """A parsed batch of a window, or (``last``) the end of the window's read."""

    window: Window
    report: WindowReport
    stats: ReadStats
    rows: list[tuple] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    last: bool = False
    unchanged: bool = False  # the source is as the latest load left it: nothing was parsed


def _parse_windows(
    source: FillSource, windows: list[Window], previous: Mapping[Window, PreviousLoad]
) -> Iterator[_Parsed]:
    """Every window's batches in order, then its end marker. A window is read from its committed
    offsets (only what was appended since); one whose data is as its latest load left it is
    announced without being read."""
    for window in windows:
        report = WindowReport(window=window.key, source=source.describe())
        stats = ReadStats()
        since = _resume_from(previous.get(window))
        if since is not None and source.unchanged(window, since):
            yield _Parsed(window, report, stats, last=True, unchanged=True)
            continue
        for rows, rejects in parse_window(source, window, report, stats, since=since):
            yield _Parsed(window, report, stats, rows, rejects)
        yield _Parsed(window, report, stats, last=True)


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
    its report repeats the window's totals with ``unchanged`` set and nothing is written.
    """
    previous = store.previous_loads(windows)
    with (
        store.session() as session,
        closing(prefetched(_parse_windows(source, windows, previous))) as parsed,
    ):
        for window in windows:
            started = time.perf_counter()
            item = next(parsed)
            if item.unchanged:
                report = _unchanged_report(previous[window], time.perf_counter() - started)
                _check_budget(report, reject_budget)
                yield report
                continue
            batches = _window_batches(item, parsed)
            yield _load(session, item, batches, previous.get(window), reject_budget, started)


def _window_batches(
    first: _Parsed, parsed: Iterator[_Parsed]
) -> Iterator[tuple[list[tuple], list[RejectRow]]]:
    item = first
    while not item.last:
        yield item.rows, item.rejects
        item = next(parsed)


def _load(
    session: LoadSession,
    item: _Parsed,
    batches: Iterator[tuple[list[tuple], list[RejectRow]]],
    before: PreviousLoad | None,
    reject_budget: RejectBudget | None,
    started: float,
) -> WindowReport:
    window, report, stats = item.window, item.report, item.stats
    with session.window(window) as load:
        # Small batches (one per segment of a quiet hour) are staged together: each staging
        # round costs several statements whatever its size.
        pending: list[tuple] = []
        for rows, rejects in batches:
            if pending:
                pending.extend(rows)
            else:
                pending = rows
            if len(pending) >= STAGE_ROWS:
                load.stage_rows(pending)
                pending = []
            if rejects:
                load.stage_rejects(rejects)
        load.stage_rows(pending)
        _check_budget(report, reject_budget)
        counts = load.finish()
        report.conflicts = counts.conflict_messages
        report.conflicts_new = counts.conflicts_recorded
        report.fills_recorded_or_present = report.fills_read - counts.conflict_messages
        report.rows_inserted = counts.rows_inserted
        report.rows_already_present = counts.rows_already_present
        report.rejects_new = counts.rejects_recorded
        report.incremental = stats.incremental
        report.rewritten_segments = list(stats.rewritten)
        report.seconds = time.perf_counter() - started
        stored = load.stored_after(counts)
        report.rows_stored = stored.rows
        summary = _summary(report, stats, before, stored, load.rows_digest)
        load.save_window(report.source, stats.extent, summary)
    return report


def _summary(
    report: WindowReport,
    stats: ReadStats,
    before: PreviousLoad | None,
    stored: StoredCounts,
    rows_digest: RowsDigest | None,
) -> dict:
    """The window's row in competition_fill_windows: its totals (an incremental load adds its
    counts to the previous load's), the committed offsets, and the stored counts."""
    summary = report.as_dict()
    for transient in ("ignored_files", "rewritten_segments", "incremental", "seconds"):
        summary.pop(transient, None)
    summary.pop("rows_stored", None)  # kept as "stored" below
    if stats.incremental and before is not None:
        for key in _ADDITIVE:
            summary[key] = summary.get(key, 0) + before.summary.get(key, 0)
        summary["incomplete_tails"] = report.incomplete_tails
        if report.newest_fill_ms is None:
            summary["newest_fill_ms"] = before.summary.get("newest_fill_ms")
    summary["version"] = RECORDING_VERSION
    summary["positions"] = stats.positions
    summary["stored"] = stored.as_dict()
    # What reconciles_with_journal compares the table with: an incremental load adds its rows'
    # digest to the window's (a window without one is compared row by row until read in full).
    if rows_digest is not None and stats.incremental and before is not None:
        rows_digest = before.rows_digest + rows_digest if before.rows_digest else None
    if rows_digest is not None:
        summary["rows_digest"] = rows_digest.as_dict()
    return summary


def _check_budget(report: WindowReport, reject_budget: RejectBudget | None) -> None:
    if reject_budget is not None:
        violation = reject_budget.violation(report.rejects, report.lines_read)
        if violation:
            raise RejectBudgetExceeded(f"window {report.window}: {violation} (strict mode)")


def _unchanged_report(before: PreviousLoad, seconds: float) -> WindowReport:
    """The window's totals, as a re-run that found every row already present reports them."""
    known = {f.name for f in fields(WindowReport)}
    report = WindowReport(**{k: v for k, v in before.summary.items() if k in known})
    report.rows_already_present += report.rows_inserted
    report.rows_inserted = report.rejects_new = report.conflicts_new = report.bytes_read = 0
    report.seconds = seconds
    report.unchanged = True
    report.rows_stored = before.stored.rows if before.stored else None
    return report


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
    report = WindowReport(window=window.key, source=source.describe())
    extent = previous.extent if previous is not None else {}
    with store.window_staging(window) as staging:
        for rows, _ in parse_window(source, window, report, ReadStats(), extent):
            staging.stage_rows(rows)
        return staging.reconcile()
