"""Where engine messages come from: one small interface for the journal and the live stream.

The asset and the sensors use only :class:`FillSource`; which implementation backs it is chosen by
configuration, never by branches in the Dagster layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from competition_pipeline.errors import PipelineError, TerminalError, TransientError, with_kind
from competition_pipeline.fills.windows import Window

#: The contract's limit on a line or message ("Limits": 64 KiB); a longer one is a reject (rule
#: ``line too long``) and is never held whole.
MAX_LINE = 64 * 1024
#: What a too-long line's reject keeps of it (besides its length and sha256).
LONG_LINE_EXCERPT = 1024


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than :data:`MAX_LINE`: what is kept of it instead of its bytes."""

    excerpt: bytes
    length: int
    sha256: str

    def reason(self) -> str:
        return (
            f"line too long: {self.length} bytes exceed the limit of {MAX_LINE}"
            f" (sha256 {self.sha256}; the first {len(self.excerpt)} bytes kept)"
        )


class LongLineReader:
    """A line being read past :data:`MAX_LINE`: its excerpt, length and hash, not its bytes."""

    __slots__ = ("excerpt", "hash", "length")

    def __init__(self, *parts: bytes) -> None:
        head = parts[0] if parts else b""
        self.excerpt = head[:LONG_LINE_EXCERPT]
        self.hash = hashlib.sha256(head)
        self.length = len(head)
        for part in parts[1:]:
            self.add(part)

    def add(self, data: bytes) -> None:
        if len(self.excerpt) < LONG_LINE_EXCERPT:
            self.excerpt += data[: LONG_LINE_EXCERPT - len(self.excerpt)]
        self.hash.update(data)
        self.length += len(data)

    def done(self) -> LongLine:
        return LongLine(self.excerpt, self.length, self.hash.hexdigest())


def bounded(line: bytes) -> bytes | LongLine:
    """``line``, or its :class:`LongLine` when it is over the limit (for lines already read)."""
    if len(line) <= MAX_LINE:
        return line
    return LongLineReader(line).done()


class SourceError(PipelineError):
    """The source cannot be read as a whole (missing root, corrupt segment, unreachable stream).

    ``SourceError(message)`` is a :class:`SourceTransientError`; deterministic failures (a corrupt
    closed segment) pass ``retryable=False`` and get a :class:`SourceTerminalError`, so the run
    fails at once instead of retrying something that cannot succeed.
    """

    def __new__(cls, message: str = "", *, retryable: bool = True) -> SourceError:
        if cls is SourceError:
            cls = with_kind(cls, retryable, SourceTransientError, SourceTerminalError)
        return super().__new__(cls, message)

    def __init__(self, message: str = "", *, retryable: bool = True) -> None:
        super().__init__(message)


class SourceTransientError(SourceError, TransientError):
    """An unreachable stream, a directory that cannot be listed now: the next attempt may read."""


class SourceTerminalError(SourceError, TerminalError):
    """A corrupt closed segment, a source not configured: every attempt fails the same way."""


@dataclass(slots=True)
class RawBatch:
    """Consecutive raw messages of one origin (a segment file, a stream), in read order."""

    origin: str  # journal: the segment's path relative to the root; stream: "nats:<stream>"
    #: (line number or stream sequence, message bytes, or a LongLine for one over MAX_LINE)
    records: list[tuple[int, bytes | LongLine]]


@dataclass(slots=True)
class ReadStats:
    """What a window read saw besides its messages; filled in while the batches are consumed."""

    segments: int = 0
    bytes_read: int = 0
    incomplete_tails: int = 0
    ignored: list[str] = field(default_factory=list)
    #: What was read, per origin (journal: complete lines per segment), so that the same data
    #: can be read again later (reconciliation) even after the source has grown.
    extent: dict[str, int] = field(default_factory=dict)
    #: Stream only: whether the source has passed the window's end plus the allowed lateness.
    complete: bool | None = None
    #: Stream: the last stream sequence read and placed, and whether the stream passed the
    #: window for good there. Journal: where the read stopped in each segment (complete lines,
    #: bytes, the size and mtime it saw, a guard hash of the bytes before the offset). Committed
    #: with the window's rows, it is the follower's offset: a later read starts there
    #: (:meth:`FillSource.read_window` with ``since``), and the journal sensor compares it with
    #: the journal to find windows behind.
    positions: dict[str, dict] = field(default_factory=dict)
    #: True when ``since`` was honoured (only what was appended since was read); False for a full
    #: read (never recorded, a segment rewritten or shrunk, a stream window's first read).
    incremental: bool = False
    #: Segments that changed before their committed offset (rewritten, shrunk): read in full.
    rewritten: list[str] = field(default_factory=list)


class FillSource(Protocol):
    """A source of engine messages, read one window at a time."""

    #: True when every message the source yields for a window claims to belong to it (the journal
    #: files fills by hour), so a fill whose timestamp lies outside is a reject. False when the
    #: source already selected the window's messages by timestamp.
    files_by_window: bool

    def describe(self) -> str:
        """A short human description for logs and metadata (never a secret)."""
        ...

    def read_window(
        self,
        window: Window,
        stats: ReadStats,
        extent: Mapping[str, int] | None = None,
        since: Mapping[str, dict] | None = None,
    ) -> Iterator[RawBatch]:
        """Yield the window's complete messages in bounded batches, in order; with ``extent``
        (an earlier read's ``stats.extent``) exactly what that read saw, nothing newer; with
        ``since`` (the committed ``stats.positions``) only what came after it (journal: per
        segment offsets; stream: the last stream sequence read)."""
        ...

    def unchanged(self, window: Window, since: Mapping[str, dict]) -> bool:
        """Whether the window's data is exactly what ``since`` (committed positions) describes,
        told without reading it (the stream: no message after the committed position)."""
        ...

    def has_data(self, window: Window) -> bool | None:
        """Whether the source holds any data for the window (a journal hour with a segment), or
        None where it cannot be told without reading it (the stream)."""
        ...

    def holds(self, window: Window, since: Mapping[str, dict]) -> bool:
        """Whether the window's data still begins with what ``since`` describes (it may have
        grown since): what a cheap reconciliation relies on; False where it cannot be told."""
        ...
