"""Where engine messages come from: one small interface for the journal and the live stream.

The asset and the sensors use only :class:`FillSource`; which implementation backs it is chosen by
configuration, never by branches in the Dagster layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from competition_pipeline.errors import PipelineError, TerminalError, TransientError, with_kind
from competition_pipeline.fills.windows import Window


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
    records: list[tuple[int, bytes]]  # (line number or stream sequence, message bytes)


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
