"""The recording's result: what recording one window read, wrote and set aside.

The recording (:mod:`competition_pipeline.recording.fill_events`) composes a
:class:`WindowReport` once, from the values its steps return (the parse's counts, the load's
counts, the stored rows); the Dagster layer turns it into materialization metadata, and the store
keeps its totals as the window's summary (:mod:`competition_pipeline.store.summary`). It lives
here, below both, because the store reads it back and may not import the recording (the layers
of pyproject.toml's import-linter contract); like ``errors.py`` it imports nothing of the package.
A report is immutable: a changed one is a new one (``dataclasses.replace``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
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
    rejects_not_stored: int = 0  # beyond the window's stored-rejects bound: counted only
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
    retired: bool = False  # retention took the window out: nothing was read or written

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
