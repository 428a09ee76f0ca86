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
) -> Iterator[tuple[list[tuple], list[RejectRow]]]:
    """The window's messages as (wallet rows, rejects) per batch; counts go into ``report``."""
    seq = 0
    start_ms, end_ms = window.start_ms, window.end_ms
    check_window = source.files_by_window
    newest = -1
    for batch in source.read_window(window, stats, extent):
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


#: Part of every stored digest: bump it when parsing or row building changes what the same bytes
#: give, so that windows recorded by older code are read again instead of being taken as unchanged.
RECORDING_VERSION = 1
#: Rows staged per round at least (a window's last round may be smaller).
STAGE_ROWS = 20_000


def _versioned(digest: str | None) -> str | None:
    return f"v{RECORDING_VERSION}:{digest}" if digest is not None else None


@dataclass(slots=True)
class _Parsed:
    """A parsed batch of a window, or (``last``) the end of the window's read."""

    window: Window
    report: WindowReport
    stats: ReadStats
    rows: list[tuple] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    last: bool = False
    unchanged: bool = False  # the source digest equals the latest load's: nothing was parsed


def _parse_windows(
    source: FillSource, windows: list[Window], previous: Mapping[Window, PreviousLoad]
) -> Iterator[_Parsed]:
    """Every window's batches in order, then its end marker; windows whose data is unchanged
    since their latest load are announced without being parsed."""
    for window in windows:
        report = WindowReport(window=window.key, source=source.describe())
        stats = ReadStats()
        before = previous.get(window)
        if before is not None and before.digest is not None:
            if _versioned(source.content_digest(window)) == before.digest:
                yield _Parsed(window, report, stats, last=True, unchanged=True)
                continue
        for rows, rejects in parse_window(source, window, report, stats):
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
    A window whose data is unchanged since its latest load (same digest) and whose stored rows,
    rejects and conflicts are as that load left them is not read again: its report repeats the
    latest load's counts with ``unchanged`` set and nothing is written.
    """
    previous = store.previous_loads(windows)
    with (
        store.session() as session,
        closing(prefetched(_parse_windows(source, windows, previous))) as parsed,
    ):
        for window in windows:
            started = time.perf_counter()
            item = next(parsed)
            report, stats = item.report, item.stats
            if item.unchanged:
                before = previous[window]
                assert before.stored is not None
                if session.intact(window, before.stored):
                    report = _unchanged_report(before, time.perf_counter() - started)
                    _check_budget(report, reject_budget)
                    yield report
                    continue
                # Something was deleted since: read the window in full, here and now.
                batches = parse_window(source, window, report, stats)
            else:
                batches = _window_batches(item, parsed)
            yield _load(session, window, report, stats, batches, reject_budget, started)


def _window_batches(
    first: _Parsed, parsed: Iterator[_Parsed]
) -> Iterator[tuple[list[tuple], list[RejectRow]]]:
    item = first
    while not item.last:
        yield item.rows, item.rejects
        item = next(parsed)


def _load(
    session: LoadSession,
    window: Window,
    report: WindowReport,
    stats: ReadStats,
    batches: Iterator[tuple[list[tuple], list[RejectRow]]],
    reject_budget: RejectBudget | None,
    started: float,
) -> WindowReport:
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
        report.seconds = time.perf_counter() - started
        summary = report.as_dict()
        del summary["ignored_files"]
        summary["digest"] = _versioned(stats.digest)
        summary["stored"] = load.stored_after(counts).as_dict()
        if load.rows_digest is not None:  # what reconciles_with_journal compares the table with
            summary["rows_digest"] = load.rows_digest.as_dict()
        load.save_window(report.source, stats.extent, summary)
    return report


def _check_budget(report: WindowReport, reject_budget: RejectBudget | None) -> None:
    if reject_budget is not None:
        violation = reject_budget.violation(report.rejects, report.lines_read)
        if violation:
            raise RejectBudgetExceeded(f"window {report.window}: {violation} (strict mode)")


def _unchanged_report(before: PreviousLoad, seconds: float) -> WindowReport:
    """The latest load's counts, as a re-run that found every row already present reports them."""
    known = {f.name for f in fields(WindowReport)}
    report = WindowReport(**{k: v for k, v in before.summary.items() if k in known})
    report.rows_already_present += report.rows_inserted
    report.rows_inserted = report.rejects_new = report.conflicts_new = 0
    report.seconds = seconds
    report.unchanged = True
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

    Cheap when nothing changed: the source is re-read without parsing (its content digest, about
    1 GB/s) and, when that equals what the window's latest load read, the digest of the rows that
    load's parse gave (computed by PostgreSQL over the staged rows, order-independent) is compared
    with the same digest over the rows stored now. Otherwise, or when the digests differ, the
    source is parsed again, to the extent the latest load read (nothing when it was never
    recorded, so data that arrived since is not counted missing), and compared row by row, which
    names the missing, unexpected and changed rows.
    """
    previous = store.previous_loads([window]).get(window)
    if previous is not None and previous.digest is not None and previous.rows_digest is not None:
        if _versioned(source.content_digest(window)) == previous.digest:
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
