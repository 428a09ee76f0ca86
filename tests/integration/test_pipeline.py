"""The recording path without Dagster: ``pipeline.record_window`` and ``reconcile_window`` called
directly against a real PostgreSQL, so a failure here points at the pipeline, not at the layer
above it (the same windows go through Dagster in test_asset.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import (
    _unchanged_report,
    reconcile_window,
    record_window,
)
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.journal import W1, W2, append, fill, line, write_segment
from tests.helpers.sql import scalar

WINDOW = Window.from_key("2026-11-20-05:00")
T0 = WINDOW.start_ms


def test_a_window_is_recorded_once_and_its_rerun_reads_nothing(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "a.jsonl", [fill(1, T0 + 1), fill(2, T0 + 2), "not json"])
    store, source = CompetitionStore(database_url), JournalSource(journal)

    first = record_window(source, store, WINDOW)
    assert (first.lines_read, first.fills_read, first.rejects) == (3, 2, 1)
    assert (first.rows_inserted, first.rows_already_present) == (4, 0)
    assert first.balanced() and not first.unchanged
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_events") == 4
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_keys") == 4

    again = record_window(source, store, WINDOW)
    assert again.unchanged and again.bytes_read == 0
    assert (again.rows_inserted, again.rows_stored) == (0, 4)
    # The unchanged report is a copy: the previous load's summary keeps what it read.
    previous = store.previous_loads([WINDOW])[WINDOW]
    report = _unchanged_report(previous, 0.0)
    assert (report.rows_inserted, report.rows_already_present) == (0, 4)
    assert (previous.summary.totals.rows_inserted, previous.summary.totals.bytes_read) == (
        4,
        first.bytes_read,
    )
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_rejects") == 1


def test_an_appended_segment_is_read_from_its_committed_offset(
    database_url: str, journal: Path
) -> None:
    segment = write_segment(journal, WINDOW, "a.jsonl", [fill(1, T0 + 1)])
    store, source = CompetitionStore(database_url), JournalSource(journal)
    first = record_window(source, store, WINDOW)
    size = segment.stat().st_size
    assert first.bytes_read == size

    append(segment, line(fill(2, T0 + 2)) + "\n")
    grown = record_window(source, store, WINDOW)
    assert grown.incremental
    assert grown.bytes_read == segment.stat().st_size - size  # only what was appended
    assert (grown.lines_read, grown.rows_inserted) == (1, 2)
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_events") == 4


def test_a_conflicting_version_is_kept_aside_and_the_first_stands(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "a.jsonl", [fill(1, T0 + 1)])
    store, source = CompetitionStore(database_url), JournalSource(journal)
    record_window(source, store, WINDOW)
    write_segment(journal, WINDOW, "b.jsonl", [fill(1, T0 + 1, price="99")])

    report = record_window(source, store, WINDOW)
    assert (report.conflicts, report.rows_inserted) == (1, 0)
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_conflicts") == 2
    assert (
        scalar(database_url, "SELECT count(*) FROM competition_fill_events WHERE price = 99") == 0
    )


def test_reconciliation_compares_by_digest_and_names_a_deleted_row(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "a.jsonl", [fill(1, T0 + 1), fill(2, T0 + 2)])
    store, source = CompetitionStore(database_url), JournalSource(journal)
    record_window(source, store, WINDOW)

    intact = reconcile_window(source, store, WINDOW)
    assert intact.exact and intact.compared_by == "digest" and intact.stored_rows == 4

    with psycopg.connect(dburl.libpq(database_url)) as conn:
        conn.execute(
            "DELETE FROM competition_fill_events WHERE trade_id = 2 AND wallet = %s", (W2,)
        )
    broken = reconcile_window(source, store, WINDOW)
    assert not broken.exact and broken.compared_by == "rows"
    assert (broken.missing, broken.missing_sample) == (1, [(2, W2)])
    assert broken.unexpected == 0

    repaired = record_window(source, store, WINDOW)  # a full read puts the row back
    assert repaired.rows_inserted == 1
    assert reconcile_window(source, store, WINDOW).exact
    kept = "SELECT count(*) FROM competition_fill_events WHERE wallet = %s"
    assert scalar(database_url, kept, W1) == 2
