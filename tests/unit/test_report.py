"""WindowSummary: the stored form of a window's totals keeps the keys earlier releases wrote."""

from __future__ import annotations

from competition_pipeline.store.database import RowsDigest, StoredCounts
from competition_pipeline.store.summary import WindowSummary
from competition_pipeline.window_report import WindowReport

#: The keys of competition_fill_windows.summary as the release before WindowSummary wrote them.
STORED_KEYS = {
    "window",
    "source",
    "lines_read",
    "fills_read",
    "fills_recorded_or_present",
    "skipped_messages",
    "rejects",
    "rejects_new",
    "conflicts",
    "conflicts_new",
    "incomplete_tails",
    "rows_inserted",
    "rows_already_present",
    "segments",
    "bytes_read",
    "newest_fill_ms",
    "stream_complete",
    "unchanged",
    "rows_per_second",
    "version",
    "positions",
    "stored",
    "rows_digest",
    "rejects_not_stored",  # issue 33: rejects beyond the window's bound, counted only
}


def _load(**counts: int) -> WindowReport:
    return WindowReport(
        "2026-11-20-03:00", "journal /j", seconds=2.0, ignored_files=["x"], rows_stored=7, **counts
    )


def _summary(report: WindowReport, digest: RowsDigest | None) -> WindowSummary:
    positions = {"a.jsonl": {"lines": 3}}
    return WindowSummary.of_load(
        report, version=2, positions=positions, stored=StoredCounts(7, 1, 0), rows_digest=digest
    )


def test_keys_and_values_are_those_stored_before() -> None:
    report = _load(lines_read=5, fills_read=4, rows_inserted=8, newest_fill_ms=9)
    data = _summary(report, RowsDigest(8, 2**70)).to_json()
    assert set(data) == STORED_KEYS
    assert data["rows_per_second"] == 4.0
    assert data["stored"] == {"rows": 7, "rejects": 1, "conflicts": 0}
    assert data["rows_digest"] == {"rows": 8, "hash_sum": str(2**70)}
    assert set(_summary(report, None).to_json()) == STORED_KEYS - {"rows_digest"}


def test_round_trip_and_an_older_summary() -> None:
    summary = _summary(_load(lines_read=5, bytes_read=10), RowsDigest(8, 3))
    again = WindowSummary.from_json(summary.to_json())
    assert again.to_json() == summary.to_json()
    assert again.stored == StoredCounts(7, 1, 0) and again.rows_digest == RowsDigest(8, 3)
    older = WindowSummary.from_json({"window": "2026-11-20-03:00", "source": "s", "rejects": 2})
    assert (older.version, older.positions, older.stored, older.rows_digest) == (None,) * 4
    assert older.totals.rejects == 2 and older.totals.lines_read == 0


def test_an_incremental_load_adds_to_the_window_totals() -> None:
    before = _summary(_load(lines_read=5, rows_inserted=8, newest_fill_ms=9), RowsDigest(8, 3))
    load = _summary(_load(lines_read=2, rows_inserted=4, incomplete_tails=1), RowsDigest(4, 4))
    total = load.after(before)
    assert (total.totals.lines_read, total.totals.rows_inserted) == (7, 12)
    assert total.totals.newest_fill_ms == 9 and total.totals.incomplete_tails == 1
    assert total.rows_digest == RowsDigest(12, 7)
    undigested = _summary(_load(lines_read=5), None)
    assert load.after(undigested).rows_digest is None  # compared row by row until read in full
    assert load.totals.lines_read == 2  # the load's own summary is left as it was
