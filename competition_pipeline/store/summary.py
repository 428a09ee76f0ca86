"""The window's summary that is stored: the totals of its loads' reports.

A :class:`~competition_pipeline.window_report.WindowReport` is one load's account (what the asset
shows); :class:`WindowSummary` is the window's row in ``competition_fill_windows.summary``: the
window's totals over its loads, the read offsets a later load continues from, and what the window
held once the load committed. Its JSON keys are those earlier releases wrote (a flat report plus
``version``, ``positions``, ``stored`` and ``rows_digest``), so windows they recorded stay
readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from competition_pipeline.store.digest import RowsDigest
from competition_pipeline.store.load import StoredCounts
from competition_pipeline.window_report import WindowReport

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
        return cls(report, report.rows_per_second, version, positions, stored, rows_digest)

    def after(self, before: WindowSummary) -> WindowSummary:
        """This incremental load's summary added to the window's previous one: the window's
        totals (the newest fill and the tails are the latest known), and its rows' digest (none
        when the previous load kept none: the window is then compared row by row until read in
        full)."""
        now, then = self.totals, before.totals
        newest = now.newest_fill_ms if now.newest_fill_ms is not None else then.newest_fill_ms
        totals = replace(
            now,
            **{name: getattr(now, name) + getattr(then, name) for name in _ADDITIVE},
            newest_fill_ms=newest,
        )
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
