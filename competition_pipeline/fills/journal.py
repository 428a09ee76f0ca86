"""The fill journal on disk (contract, section 3).

``<root>/date=YYYY-MM-DD/hour=HH/<segment>.jsonl[.gz]``: segments sort in write order; a plain
segment may still be appended to, so only ``\\n``-terminated lines are read and an unterminated tail
is left for a later run; a ``.gz`` segment is closed, so its last line counts even without ``\\n``.
Anything else in the tree is ignored and reported, never parsed.

The file rule (one rule for the sensor, a run, the exporter and a rebuild): only regular files and
directories inside the root belong to the journal. A symbolic link (a ``date=``/``hour=`` directory
or a segment) is reported, by name, and nothing is read through it; a segment is opened with
``O_NOFOLLOW`` and must be a regular file whose directory resolves inside the root.

Bounded work per line: a line is at most :data:`MAX_LINE` bytes (contract, "Limits"). A longer one
is never held whole: it becomes a :class:`LongLine` (an excerpt, its length and its sha256), read
in chunks, so memory stays near two read chunks whatever the input, and reading is linear in bytes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import re
import stat as stat_module
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from competition_pipeline.fills.source import (
    MAX_LINE,
    LongLine,
    LongLineReader,
    RawBatch,
    ReadStats,
    SourceError,
    bounded,
)
from competition_pipeline.fills.windows import Window

SEGMENT = re.compile(r"[^./][^/]*\.jsonl(?:\.gz)?", re.ASCII)
DATE_DIR = re.compile(r"date=([0-9]{4}-[0-9]{2}-[0-9]{2})", re.ASCII)
HOUR_DIR = re.compile(r"hour=([0-9]{2})", re.ASCII)
READ_CHUNK = 4 * 1024 * 1024
#: How an ignored entry that is a symbolic link is named in reports and warnings.
SYMLINK_NOTE = " (symbolic link: not part of the journal, never read)"
# About 50 MB of lines and rows per batch; with two batches queued ahead, peak memory stays near
# 300 MB however large the window.
BATCH_LINES = 20_000
#: Bytes before a committed offset whose hash is kept with it: a segment that grew is read from its
#: offset only while these bytes are unchanged (the contract's segments are append-only; a rewrite
#: is caught here and the window is read again in full).
GUARD_BYTES = 4096


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a journal file for reading: never through a symbolic link, only a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from exc
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceError(f"{path} is not a regular file", retryable=False)
    return os.fdopen(fd, "rb")


def open_segment(segment: Segment) -> BinaryIO:
    """A segment's bytes (decompressed for ``.gz``), opened by :func:`open_regular`'s rule."""
    handle = open_regular(segment.path)
    if not segment.closed:
        return handle
    closed = gzip.GzipFile(fileobj=handle, mode="rb")
    closed.myfileobj = handle  # closed with it, as gzip.open(path) does  # type: ignore[attr-defined]
    return closed  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    relative: str
    size: int
    mtime_ns: int

    @property
    def closed(self) -> bool:
        return self.path.name.endswith(".gz")


def window_dir(root: Path, window: Window) -> Path:
    return root / f"date={window.start:%Y-%m-%d}" / f"hour={window.start:%H}"


class JournalSource:
    """Reads windows from a journal directory tree (``FILL_JOURNAL_DIR``)."""

    files_by_window = True

    def __init__(self, root: str | os.PathLike[str], *, batch_lines: int = BATCH_LINES) -> None:
        self.root = Path(root)
        self.batch_lines = batch_lines

    def describe(self) -> str:
        return f"journal {self.root}"

    def segments(self, window: Window) -> tuple[list[Segment], list[str]]:
        """The window's segments in write order, and the entries of its directory that are not."""
        if not self.root.is_dir():
            raise SourceError(f"journal root {self.root} does not exist or is not a directory")
        directory = window_dir(self.root, window)
        relative = directory.relative_to(self.root).as_posix()
        try:
            outside = _outside_entry(self.root, relative)
            if outside is not None:  # a symlinked date= or hour= directory: never listed
                return [], [outside]
            return _list_segments(directory, relative)
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise SourceError(f"cannot list {directory}: {exc}") from exc

    def has_data(self, window: Window) -> bool:
        return bool(self.segments(window)[0])

    def read_window(
        self,
        window: Window,
        stats: ReadStats,
        extent: Mapping[str, int] | None = None,
        since: Mapping[str, dict] | None = None,
    ) -> Iterator[RawBatch]:
        segments, ignored = self.segments(window)
        stats.ignored.extend(ignored)
        starts: dict[str, tuple[int, int] | None] = {}  # segment -> (line, byte) to read from
        if since is not None:
            starts, stats.rewritten = _resume_points(segments, since)
            stats.incremental = not stats.rewritten
            if stats.rewritten:  # outside the contract: read the whole window again
                starts = {}
        for segment in segments:
            if extent is not None and segment.relative not in extent:
                continue  # written after the read that ``extent`` describes
            stats.segments += 1  # the window's segments, read or not (bytes_read says what)
            start = starts.get(segment.relative, (0, 0))
            if start is None:  # unchanged since its committed offset: nothing to read
                stats.positions[segment.relative] = dict(since[segment.relative])  # type: ignore[index]
                stats.extent[segment.relative] = since[segment.relative]["lines"]  # type: ignore[index]
                continue
            limit = extent[segment.relative] if extent is not None else None
            yield from self._read_segment(segment, stats, limit, start)

    def unchanged(self, window: Window, since: Mapping[str, dict]) -> bool:
        """Every segment has the size and mtime its committed offset saw, and no segment is new:
        told by ``stat`` alone (the sensor uses the same rule, see ``follow.behind``)."""
        segments, _ = self.segments(window)
        return all(
            (p := since.get(s.relative)) is not None and (s.size, s.mtime_ns) == _seen(p)
            for s in segments
        )

    def holds(self, window: Window, since: Mapping[str, dict]) -> bool:
        """Every committed segment is still there and unchanged up to its committed offset (a
        closed one unchanged; a plain one at least as long, with the same guard hash before its
        offset): the data the committed loads read is still the journal's. Reads 4 KiB a segment."""
        segments = {s.relative: s for s in self.segments(window)[0]}
        for relative, position in since.items():
            segment = segments.get(relative)
            if segment is None:
                return False
            if segment.closed or "bytes" not in position:
                if (segment.size, segment.mtime_ns) != _seen(position):
                    return False
            elif segment.size < position["bytes"] or (
                _guard(segment.path, position["bytes"]) != position["guard"]
            ):
                return False
        return True

    @staticmethod
    def _open(segment: Segment) -> BinaryIO:
        try:
            return open_segment(segment)
        except SourceError as exc:
            raise SourceError(f"cannot open segment {segment.relative}: {exc}") from exc

    @staticmethod
    def _chunk(handle: BinaryIO, segment: Segment) -> bytes:
        try:
            return handle.read(READ_CHUNK)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise SourceError(
                f"corrupt segment {segment.relative}: {exc}", retryable=False
            ) from exc
        except OSError as exc:
            raise SourceError(f"cannot read segment {segment.relative}: {exc}") from exc

    def _read_segment(
        self, segment: Segment, stats: ReadStats, limit: int | None, start: tuple[int, int]
    ) -> Iterator[RawBatch]:
        """Complete lines from ``start``, in batches. Linear in the bytes: a line split across
        chunks is joined once (its pieces are at most :data:`MAX_LINE`), and a longer line is
        hashed as it streams by, never held (:class:`LongLine`)."""
        line_no, offset = start
        handle = self._open(segment)
        with handle:
            if offset:
                handle.seek(offset)
            pending = b""  # the current line's bytes so far (at most MAX_LINE)
            long: LongLineReader | None = None  # the current line, once it is over MAX_LINE
            records: list[tuple[int, bytes | LongLine]] = []
            consumed = offset
            line_start = offset  # where the current (unterminated) line begins
            while True:
                chunk = self._chunk(handle, segment)
                if not chunk:
                    break
                stats.bytes_read += len(chunk)
                consumed += len(chunk)
                pieces = chunk.split(b"\n")
                tail = pieces.pop()
                if pieces:  # the current line ends in this chunk
                    first = pieces[0]
                    if long is not None:
                        long.add(first)
                        pieces[0] = long.done()  # type: ignore[call-overload]
                        long = None
                    elif pending:
                        pieces[0] = (
                            pending + first
                            if len(pending) + len(first) <= MAX_LINE
                            else (
                                LongLineReader(pending, first).done()  # type: ignore[assignment]
                            )
                        )
                    pending = b""
                    line_start = consumed - len(tail)
                    if limit is not None and line_no + len(pieces) >= limit:
                        pieces, tail = pieces[: limit - line_no], b""
                    for line in pieces:
                        line_no += 1
                        records.append((line_no, bounded(line) if type(line) is bytes else line))
                    if limit is not None and line_no >= limit:
                        break
                if long is not None:
                    long.add(tail)
                elif len(pending) + len(tail) > MAX_LINE:
                    long = LongLineReader(pending)
                    long.add(tail)
                    pending = b""
                else:
                    pending += tail  # bounded by MAX_LINE: linear overall
                if len(records) >= self.batch_lines:
                    yield RawBatch(segment.relative, records)  # type: ignore[arg-type]
                    records = []
            if pending or long is not None:
                if segment.closed:
                    # A closed segment never grows: its last line is final even without "\n".
                    line_no += 1
                    records.append((line_no, long.done() if long is not None else pending))
                    pending, long = b"", None
                    line_start = consumed
                else:
                    stats.incomplete_tails += 1
            stats.extent[segment.relative] = line_no
            if limit is None:
                stats.positions[segment.relative] = self._position(
                    segment, handle, line_no, line_start, consumed
                )
            if records:
                yield RawBatch(segment.relative, records)  # type: ignore[arg-type]

    def _position(
        self, segment: Segment, handle: BinaryIO, lines: int, end: int, consumed: int
    ) -> dict:
        """The committed offset of a segment read to its end: complete lines and their bytes, the
        size and mtime seen (a plain segment's size is what was consumed, so a line appended
        after the read shows as growth), and the guard hash of the bytes before the offset."""
        if segment.closed:  # immutable: the listing's size and mtime describe it
            return {"lines": lines, "size": segment.size, "mtime_ns": segment.mtime_ns}
        return {
            "lines": lines,
            "bytes": end,
            "size": consumed,
            "mtime_ns": os.fstat(handle.fileno()).st_mtime_ns,  # the file opened, not a path
            "guard": _guard(segment.path, end),
        }


def _outside_entry(root: Path, relative: str) -> str | None:
    """The ignored-entry name of the first symbolic link among ``relative``'s directories, or of
    the directory when it resolves outside ``root``; None when it is plainly inside (or absent:
    ``FileNotFoundError``)."""
    path = root
    parts = relative.split("/")
    for i, part in enumerate(parts):
        path = path / part
        mode = os.lstat(path).st_mode
        if stat_module.S_ISLNK(mode):
            return "/".join(parts[: i + 1]) + SYMLINK_NOTE
        if not stat_module.S_ISDIR(mode):
            return "/".join(parts[: i + 1])
    if os.path.realpath(path) != os.path.join(os.path.realpath(root), *parts):
        return relative + SYMLINK_NOTE  # pragma: no cover - a link replaced while checked
    return None


def _seen(position: Mapping) -> tuple[int, int]:
    return position["size"], position["mtime_ns"]


def _guard(path: Path, end: int) -> str:
    """sha256 of the ``GUARD_BYTES`` bytes before ``end`` (fewer at the start of a segment)."""
    start = max(0, end - GUARD_BYTES)
    with open_regular(path) as handle:
        handle.seek(start)
        return hashlib.sha256(handle.read(end - start)).hexdigest()


def _resume_points(
    segments: list[Segment], since: Mapping[str, dict]
) -> tuple[dict[str, tuple[int, int] | None], list[str]]:
    """Where to read each segment from, given its committed offset: None (unchanged, skip),
    (lines, bytes) of a plain segment that only grew, (0, 0) for a new one; and the segments
    that changed before their offset (shrunk, rewritten, a closed segment replaced)."""
    starts: dict[str, tuple[int, int] | None] = {}
    rewritten: list[str] = []
    for segment in segments:
        position = since.get(segment.relative)
        if position is None:
            starts[segment.relative] = (0, 0)
        elif (segment.size, segment.mtime_ns) == _seen(position):
            starts[segment.relative] = None
        elif (
            not segment.closed
            and "bytes" in position
            and segment.size >= position["size"]
            and _guard(segment.path, position["bytes"]) == position["guard"]
        ):
            starts[segment.relative] = (position["lines"], position["bytes"])
        else:
            rewritten.append(segment.relative)
    return starts, rewritten


@dataclass(frozen=True, slots=True)
class WindowState:
    """An hour directory as a sensor sees it: its segments' names, sizes and mtimes."""

    window: Window
    segments: tuple[Segment, ...]


def scan(root: str | os.PathLike[str]) -> tuple[list[WindowState], list[str]]:
    """Every hour directory with segments, and the entries that are outside the layout.

    One ``scandir`` per directory and one ``stat`` per segment: about 30,000 system calls for
    10,000 hours, so a sensor tick over a year of journal stays well under a second.
    """
    root = Path(root)
    states: list[WindowState] = []
    ignored: list[str] = []
    try:
        date_entries = list(os.scandir(root))
    except OSError as exc:
        raise SourceError(f"cannot list journal root {root}: {exc}") from exc
    for date_entry in date_entries:
        date_match = DATE_DIR.fullmatch(date_entry.name)
        if date_entry.is_symlink():
            ignored.append(date_entry.name + SYMLINK_NOTE)
            continue
        if not date_match or not date_entry.is_dir(follow_symlinks=False):
            ignored.append(date_entry.name)
            continue
        try:
            dt.date.fromisoformat(date_match.group(1))
        except ValueError:
            ignored.append(date_entry.name)
            continue
        for hour_entry in os.scandir(date_entry.path):
            hour_match = HOUR_DIR.fullmatch(hour_entry.name)
            relative = f"{date_entry.name}/{hour_entry.name}"
            if hour_entry.is_symlink():
                ignored.append(relative + SYMLINK_NOTE)
                continue
            if not hour_match or not hour_entry.is_dir(follow_symlinks=False):
                ignored.append(relative)
                continue
            try:
                window = Window.from_key(f"{date_match.group(1)}-{hour_match.group(1)}:00")
            except ValueError:
                ignored.append(relative)
                continue
            segments, _ = _list_segments(Path(hour_entry.path), relative)
            if segments:
                states.append(WindowState(window, tuple(segments)))
    states.sort(key=lambda s: s.window)
    return states, ignored


def _list_segments(directory: Path, relative: str) -> tuple[list[Segment], list[str]]:
    """The segments of an hour directory in name (write) order, and its other entries."""
    segments, ignored = [], []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        name = f"{relative}/{entry.name}"
        if entry.is_symlink():
            ignored.append(name + SYMLINK_NOTE)
        elif SEGMENT.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            segments.append(Segment(Path(entry.path), name, stat.st_size, stat.st_mtime_ns))
        else:
            ignored.append(name)
    return segments, ignored
