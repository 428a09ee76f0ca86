"""What recording a window counts: the run's report, and the window's summary that is stored.

:class:`WindowReport` is one load's account (what the asset shows); :class:`WindowSummary` is the
window's row in ``competition_fill_windows.summary``: the window's totals over its loads, the read
offsets a later load continues from, and what the window held once the load committed. Its JSON
keys are those earlier releases wrote (a flat report plus ``version``, ``positions``, ``stored``
and ``rows_digest``), so windows they recorded stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

from competition_pipeline.store.digest import RowsDigest
from competition_pipeline.store.load import StoredCounts


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


#: Report fields about one run only, not kept with the window (``rows_stored`` is kept as
#: ``stored``).
_TRANSIENT = (
    "ignored_files",
    "rewritten_segments",
    "incremental",
    "seconds",
    "rows_stored",
    "retired",
)
_KEPT = tuple(f.name for f in fields(WindowReport) if f.name not in _TRANSIENT)
#: Counts that add up over a window's loads: an incremental load stores the window's totals.
_ADDITIVE = (
    "lines_read",
    "fills_read",
    "fills_recorded_or_present",
    "skipped_messages",
    "rejects",
    "rejects_new",
    "rejects_not_stored",
    "conflicts",
    "conflicts_new",
    "rows_inserted",
    "rows_already_present",
    "bytes_read",
)


@dataclass(slots=True)
class WindowSummary:
    """A window's row in ``competition_fill_windows.summary`` (see the module docstring)."""

    totals: WindowReport  # its transient fields are not kept
    rows_per_second: float = 0.0  # of the load that wrote the summary
    version: int | None = None  # the recording version (pipeline.RECORDING_VERSION) of the load
    positions: dict[str, dict] | None = None  # committed read offsets (journal), stream position
    stored: StoredCounts | None = None  # what the window held once the load committed
    rows_digest: RowsDigest | None = None  # of the rows the source gave the window's loads

    @classmethod
    def of_load(
        cls,
        report: WindowReport,
        *,
        version: int,
        positions: dict[str, dict] | None,
        stored: StoredCounts,
        rows_digest: RowsDigest | None,
    ) -> WindowSummary:
        """One load's summary: what a window read in full stores."""
        return cls(replace(report), report.rows_per_second, version, positions, stored, rows_digest)

    def after(self, before: WindowSummary) -> WindowSummary:
        """This incremental load's summary added to the window's previous one: the window's
        totals (the newest fill and the tails are the latest known), and its rows' digest (none
        when the previous load kept none: the window is then compared row by row until read in
        full)."""
        totals = replace(self.totals)
        for name in _ADDITIVE:
            setattr(totals, name, getattr(totals, name) + getattr(before.totals, name))
        if totals.newest_fill_ms is None:
            totals.newest_fill_ms = before.totals.newest_fill_ms
        digest = self.rows_digest
        if digest is not None:
            digest = before.rows_digest + digest if before.rows_digest else None
        return replace(self, totals=totals, rows_digest=digest)

    def to_json(self) -> dict:
        data = {name: getattr(self.totals, name) for name in _KEPT}
        data["rows_per_second"] = self.rows_per_second
        data["version"] = self.version
        data["positions"] = self.positions
        data["stored"] = self.stored.as_dict() if self.stored is not None else None
        if self.rows_digest is not None:
            data["rows_digest"] = self.rows_digest.as_dict()
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> WindowSummary:
        """Read a stored summary; a key an older release did not write takes its default."""
        totals = WindowReport(**{name: data[name] for name in _KEPT if name in data})
        stored, digest = data.get("stored"), data.get("rows_digest")
        return cls(
            totals,
            data.get("rows_per_second", 0.0),
            data.get("version"),
            data.get("positions"),
            StoredCounts(**stored) if stored else None,
            RowsDigest.from_dict(digest) if digest else None,
        )
