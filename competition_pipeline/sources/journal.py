"""The fill journal on disk (contract, section 3).

``<root>/date=YYYY-MM-DD/hour=HH/<segment>.jsonl[.gz]``: segments sort in write order; a plain
segment may still be appended to, so only ``\\n``-terminated lines are read and an unterminated tail
is left for a later run; a ``.gz`` segment is closed, so its last line counts even without ``\\n``.
Anything else in the tree is ignored and reported, never parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from competition_pipeline.sources import RawBatch, ReadStats, SourceError
from competition_pipeline.windows import Window

SEGMENT = re.compile(r"[^./][^/]*\.jsonl(?:\.gz)?", re.ASCII)
DATE_DIR = re.compile(r"date=([0-9]{4}-[0-9]{2}-[0-9]{2})", re.ASCII)
HOUR_DIR = re.compile(r"hour=([0-9]{2})", re.ASCII)
READ_CHUNK = 4 * 1024 * 1024
BATCH_LINES = 50_000


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
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise SourceError(f"cannot list {directory}: {exc}") from exc
        segments, ignored = [], []
        for entry in entries:
            relative = f"{directory.relative_to(self.root).as_posix()}/{entry.name}"
            if SEGMENT.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                segments.append(Segment(Path(entry.path), relative, stat.st_size, stat.st_mtime_ns))
            else:
                ignored.append(relative)
        return segments, ignored

    def fingerprint(self, window: Window) -> str:
        """Changes whenever the window's data may have: a segment added, grown, or rewritten."""
        segments, _ = self.segments(window)
        digest = hashlib.blake2b(digest_size=12)
        for segment in segments:
            digest.update(f"{segment.relative}\0{segment.size}\0{segment.mtime_ns}\n".encode())
        return digest.hexdigest()

    def read_window(self, window: Window, stats: ReadStats) -> Iterator[RawBatch]:
        segments, ignored = self.segments(window)
        stats.ignored.extend(ignored)
        for segment in segments:
            stats.segments += 1
            yield from self._read_segment(segment, stats)

    def _read_segment(self, segment: Segment, stats: ReadStats) -> Iterator[RawBatch]:
        try:
            handle: BinaryIO = (
                gzip.open(segment.path, "rb") if segment.closed else open(segment.path, "rb")
            )
        except OSError as exc:
            raise SourceError(f"cannot open segment {segment.relative}: {exc}") from exc
        with handle:
            line_no = 0
            pending = b""
            records: list[tuple[int, bytes]] = []
            while True:
                try:
                    chunk = handle.read(READ_CHUNK)
                except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                    raise SourceError(
                        f"corrupt segment {segment.relative}: {exc}", retryable=False
                    ) from exc
                except OSError as exc:
                    raise SourceError(f"cannot read segment {segment.relative}: {exc}") from exc
                if not chunk:
                    break
                stats.bytes_read += len(chunk)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    line_no += 1
                    records.append((line_no, line))
                if len(records) >= self.batch_lines:
                    yield RawBatch(segment.relative, records)
                    records = []
            if pending:
                if segment.closed:
                    # A closed segment never grows: its last line is final even without "\n".
                    line_no += 1
                    records.append((line_no, pending))
                else:
                    stats.incomplete_tails += 1
            if records:
                yield RawBatch(segment.relative, records)
