"""``competition_fill_events`` through Dagster's ``materialize``, against a real PostgreSQL."""

from __future__ import annotations

import gzip
import os
from decimal import Context, Decimal, localcontext
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store import dburl
from tests.helpers.journal import KEY, T0, W1, W2, W3, W4, WINDOW, append, fill, line, write_segment
from tests.helpers.runs import materialize, metadata
from tests.helpers.sql import execute, query, recorder_role


def table(database_url: str) -> list[tuple]:
    return query(
        database_url,
        "SELECT trade_id, wallet, role, side, counterparty, is_self_trade, symbol, price, size,"
        " notional, fee, realized_pnl, builder_code_address, builder_code_fee, source_type,"
        " fill_ts, window_start, recorded_at FROM competition_fill_events ORDER BY 1, 2",
    )


def hand_journal(journal: Path) -> None:
    """Two segments whose answer is worked out in test_window_is_recorded_exactly."""
    write_segment(
        journal,
        WINDOW,
        "seg-0001.jsonl.gz",
        [
            fill(1, T0 + 1),  # 2 rows
            {"type": "Heartbeat"},  # skipped
            fill(
                2,
                T0 + 2,
                taker_wallet_address=W3,
                maker_wallet_address=W3.upper()[:2].lower() + W3[2:].upper(),
            ),  # self-trade: 1 row
            fill(3, T0 + 3, price=1520.5),  # reject: a JSON number
            fill(1, T0 + 1),  # exact duplicate: already present
        ],
    )
    write_segment(
        journal,
        WINDOW,
        "seg-0002.jsonl",
        [
            fill(1, T0 + 1, price="1600"),  # conflict: same key, other price
            fill(4, T0 + 3_600_000),  # reject: filed under the wrong hour
            {"type": "OrderPlaced", "order": {}},  # skipped
            fill(5, T0 + 5, taker_wallet_address=W4, taker_side="sell", accounting=None),  # 2 rows
        ],
    )


def test_window_is_recorded_exactly(database_url: str, journal: Path) -> None:
    hand_journal(journal)
    result = materialize(database_url, journal)
    assert result.success
    meta = metadata(result)
    assert meta["lines_read"] == 9
    assert meta["fills_read"] == 5  # trades 1, 2, 1 (dup), 1 (conflict), 5
    assert meta["skipped_messages"] == 2
    assert meta["rejects"] == 2
    assert meta["conflicts"] == 1
    assert meta["rows_inserted"] == 5  # 2 + 1 + 2
    assert meta["rows_already_present"] == 2  # the exact duplicate's two rows
    assert meta["incomplete_tails"] == 0
    assert meta["accounting_balanced"] is True
    assert meta["rows_per_second"] > 0

    rows = {(r[0], r[1]): r for r in table(database_url)}
    assert set(rows) == {(1, W1), (1, W2), (2, W3), (5, W4.lower()), (5, W2)}
    taker, maker = rows[(1, W1)], rows[(1, W2)]
    assert taker[2:7] == ("taker", "Buy", W2, False, "BTC-20260331-100000-C")
    assert maker[2:5] == ("maker", "Sell", W1)
    assert taker[7] == Decimal("1520.5")  # the first version stands, not the conflicting 1600
    assert taker[9] == Decimal("380.125")  # notional = price x size, exact
    assert (taker[10], maker[10]) == (Decimal("0.38"), Decimal("-0.05"))  # accounting fees
    assert (taker[11], maker[11]) == (Decimal("-12.5"), None)
    self_row = rows[(2, W3)]
    assert self_row[2:6] == ("self", "Buy", W3, True)
    assert self_row[10] == Decimal("0.33")  # both legs' fees: 0.38 + (-0.05)
    no_accounting_taker, no_accounting_maker = rows[(5, W4.lower())], rows[(5, W2)]
    assert no_accounting_taker[3] == "Sell" and no_accounting_maker[3] == "Buy"
    assert (no_accounting_taker[10], no_accounting_maker[10]) == (Decimal("0.38"), Decimal("0"))
    assert all(r[16] == WINDOW.start for r in rows.values())
    assert rows[(1, W1)][15] == WINDOW.start.replace(microsecond=1000)

    rejects = query(
        database_url,
        "SELECT source_file, line_no, reason, raw_line FROM competition_fill_rejects ORDER BY 1, 2",
    )
    assert [(r[0], r[1]) for r in rejects] == [
        ("date=2026-11-20/hour=03/seg-0001.jsonl.gz", 4),
        ("date=2026-11-20/hour=03/seg-0002.jsonl", 2),
    ]
    assert rejects[0][2].startswith("price:") and '"trade_id": 3' in rejects[0][3]
    assert "outside the window" in rejects[1][2]
    conflicts = query(
        database_url,
        "SELECT source_file, line_no, trade_id, wallet, differing_fields, conflicts_with"
        " FROM competition_fill_conflicts ORDER BY wallet",
    )
    assert [c[:5] for c in conflicts] == [
        ("date=2026-11-20/hour=03/seg-0002.jsonl", 1, 1, W1, "price"),
        ("date=2026-11-20/hour=03/seg-0002.jsonl", 1, 1, W2, "price"),
    ]


def test_rerun_inserts_nothing_and_changes_nothing(database_url: str, journal: Path) -> None:
    hand_journal(journal)
    materialize(database_url, journal)
    before = table(database_url)
    counts = query(
        database_url,
        "SELECT (SELECT count(*) FROM competition_fill_rejects),"
        " (SELECT count(*) FROM competition_fill_conflicts)",
    )
    for _ in range(2):
        meta = metadata(materialize(database_url, journal))
        assert meta["rows_inserted"] == 0
        assert meta["rows_already_present"] == 7
        assert meta["rejects"] == 2 and meta["rejects_new"] == 0
        assert meta["accounting_balanced"] is True
    assert table(database_url) == before  # recorded_at included: nothing rewritten
    assert counts == query(
        database_url,
        "SELECT (SELECT count(*) FROM competition_fill_rejects),"
        " (SELECT count(*) FROM competition_fill_conflicts)",
    )


def test_unchanged_window_is_not_read_again_unless_its_rows_changed(
    database_url: str, journal: Path
) -> None:
    """A re-run over the same bytes with the table as the last load left it reads nothing and
    writes nothing; a deleted row, or a changed byte, sends it down the full path again."""
    hand_journal(journal)
    first = metadata(materialize(database_url, journal))
    assert first["unchanged"] is False
    again = metadata(materialize(database_url, journal))
    assert again["unchanged"] is True
    assert (again["rows_inserted"], again["rows_already_present"]) == (0, 7)
    for key in ("lines_read", "fills_read", "rejects", "skipped_messages", "conflicts"):
        assert again[key] == first[key], key
    # Someone deletes a recorded row: the next run notices and puts it back.
    execute(database_url, "DELETE FROM competition_fill_events WHERE trade_id = 1")
    repaired = metadata(materialize(database_url, journal))
    assert repaired["unchanged"] is False
    assert repaired["rows_inserted"] == len(
        query(database_url, "SELECT 1 FROM competition_fill_events WHERE trade_id = 1")
    )
    assert repaired["rows_inserted"] >= 1
    # A deleted reject too (rejects are keyed by window, file and line).
    execute(database_url, "DELETE FROM competition_fill_rejects")
    assert metadata(materialize(database_url, journal))["rejects_new"] == 2
    # A new line in the window's segment: read in full, the new fill recorded.
    write_segment(journal, WINDOW, "z-late.jsonl", [fill(99, T0 + 5)])
    grown = metadata(materialize(database_url, journal))
    assert (grown["unchanged"], grown["rows_inserted"]) == (False, 2)
    assert metadata(materialize(database_url, journal))["unchanged"] is True


def test_a_range_run_commits_window_by_window_and_stops_at_a_bad_one(
    database_url: str, journal: Path
) -> None:
    """A backfill range is one run over one connection: each window commits and is reported as
    its own materialization; a corrupt segment fails the run naming its window, keeps the
    windows before it, and a re-run of the range after the repair is exact."""
    windows = [Window(WINDOW.start + i * HOUR) for i in range(4)]
    for i, window in enumerate(windows):
        write_segment(journal, window, "seg.jsonl", [fill(100 + i, window.start_ms + i)])
    bad = window_dir(journal, windows[2]) / "seg-0.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    tags = {
        "dagster/asset_partition_range_start": windows[0].key,
        "dagster/asset_partition_range_end": windows[-1].key,
    }
    result = materialize(database_url, journal, key=None, tags=tags, raise_on_error=False)
    assert not result.success
    assert f"window {windows[2].key} not recorded" in _failure_text(result)
    done = [e.partition for e in result.get_asset_materialization_events()]
    assert done == [windows[0].key, windows[1].key]
    assert stored_trades(database_url) == [100, 101]
    bad.write_bytes(gzip.compress(line(fill(200, windows[2].start_ms)).encode()))
    result = materialize(database_url, journal, key=None, tags=tags)
    events = result.get_asset_materialization_events()
    by_window = {e.partition: e.materialization.metadata for e in events}
    assert list(by_window) == [w.key for w in windows]
    assert [by_window[w.key]["unchanged"].value for w in windows] == [True, True, False, False]
    assert [by_window[w.key]["rows_inserted"].value for w in windows] == [0, 0, 4, 2]
    assert stored_trades(database_url) == [100, 101, 102, 103, 200]


def stored_trades(database_url: str) -> list[int]:
    rows = query(database_url, "SELECT DISTINCT trade_id FROM competition_fill_events ORDER BY 1")
    return [trade_id for (trade_id,) in rows]


def test_two_windows_stay_apart(database_url: str, journal: Path) -> None:
    other = Window.from_key("2026-11-20-04:00")
    write_segment(journal, WINDOW, "a.jsonl", [fill(10, T0 + 10)])
    write_segment(journal, other, "a.jsonl", [fill(11, other.start_ms), fill(12, other.end_ms - 1)])
    assert metadata(materialize(database_url, journal))["rows_inserted"] == 2
    assert metadata(materialize(database_url, journal, other.key))["rows_inserted"] == 4
    by_window = query(
        database_url,
        "SELECT window_start, array_agg(DISTINCT trade_id ORDER BY trade_id)"
        " FROM competition_fill_events GROUP BY 1 ORDER BY 1",
    )
    assert by_window == [(WINDOW.start, [10]), (other.start, [11, 12])]


def test_conflict_with_a_stored_row_is_recorded_not_written(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(7, T0 + 7)])
    materialize(database_url, journal)
    before = table(database_url)
    write_segment(journal, WINDOW, "seg-2.jsonl", [fill(7, T0 + 7, size="9", symbol="ETH-PERP")])
    meta = metadata(materialize(database_url, journal))
    # Only the new segment is read (seg-1 is unchanged since its committed offset).
    assert (meta["conflicts"], meta["rows_inserted"], meta["rows_already_present"]) == (1, 0, 0)
    assert meta["incremental"] is True
    assert table(database_url) == before
    conflicts = query(
        database_url, "SELECT conflicts_with, differing_fields FROM competition_fill_conflicts"
    )
    assert conflicts == [("recorded row", "symbol,size")] * 2


def test_unterminated_tail_is_left_for_a_later_run(database_url: str, journal: Path) -> None:
    text = fill(21, T0 + 21)
    segment = write_segment(
        journal, WINDOW, "live.jsonl", [fill(20, T0 + 20)], tail='{"type": "Ord'
    )
    meta = metadata(materialize(database_url, journal))
    assert (meta["rows_inserted"], meta["rejects"], meta["incomplete_tails"]) == (2, 0, 1)
    assert meta["accounting_balanced"] is True
    assert query(database_url, "SELECT count(*) FROM competition_fill_rejects") == [(0,)]
    # The engine completes the line; the fragment written so far is its beginning.
    import json

    rest = json.dumps(text)[len('{"type": "Ord') :]
    append(segment, rest + "\n")
    meta = metadata(materialize(database_url, journal))
    assert (meta["rows_inserted"], meta["rejects"], meta["incomplete_tails"]) == (2, 0, 0)
    assert query(database_url, "SELECT count(DISTINCT trade_id) FROM competition_fill_events") == [
        (2,)
    ]


def test_decimals_stay_exact(database_url: str, journal: Path) -> None:
    price = "12345678901234567890.123456789012345678"
    size = "0.000000000000000000000000000001"
    write_segment(journal, WINDOW, "s.jsonl", [fill(30, T0, price=price, size=size)])
    materialize(database_url, journal)
    ((stored_price, notional),) = query(
        database_url,
        "SELECT price::text, notional::text FROM competition_fill_events WHERE role = 'taker'",
    )
    assert stored_price == price
    with localcontext(Context(prec=200)):
        assert Decimal(notional) == Decimal(price) * Decimal(size)  # exact product, no float


def test_empty_window_succeeds_with_zero_counts(database_url: str, journal: Path) -> None:
    meta = metadata(materialize(database_url, journal))
    assert (meta["lines_read"], meta["rows_inserted"], meta["segments"]) == (0, 0, 0)


def test_files_outside_the_layout_are_ignored_and_reported(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg.jsonl", [fill(40, T0)])
    write_segment(journal, WINDOW, "notes.txt", ["not a segment"])
    meta = metadata(materialize(database_url, journal))
    assert meta["rows_inserted"] == 2
    assert "date=2026-11-20/hour=03/notes.txt" in meta["ignored_files"]


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for event in result.all_events:
        parts.append(event.message or "")
        if event.is_step_failure:
            parts.append(str(event.step_failure_data.error))
    return "\n".join(parts)


def test_unreachable_database_fails_the_run_without_the_password(journal: Path) -> None:
    write_segment(journal, WINDOW, "seg.jsonl", [fill(50, T0)])
    url = "postgresql://recorder:s3cr3t-pw@127.0.0.1:1/competition"
    result = materialize(url, journal, raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert "s3cr3t-pw" not in text
    assert f"window {KEY}" in text and "cannot connect to" in text
    assert "postgresql://recorder:***@127.0.0.1:1/competition" in text
    # A connection failure is transient: the RetryPolicy retried the step before failing.
    assert any(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)


def test_corrupt_gzip_fails_naming_the_file_and_commits_nothing(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(60, T0)])
    bad = write_segment(journal, WINDOW, "seg-2.jsonl.gz", [fill(61, T0)])
    data = bad.read_bytes()
    bad.write_bytes(data[:12] + b"\x00garbage\xff" * 4 + data[-8:])
    result = materialize(database_url, journal, raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert "corrupt segment date=2026-11-20/hour=03/seg-2.jsonl.gz" in text
    assert f"window {KEY}" in text
    # Deterministic: not retried.
    assert not any(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(0,)]
    # Other windows are unaffected.
    other = Window.from_key("2026-11-20-05:00")
    write_segment(journal, other, "seg-1.jsonl", [fill(62, other.start_ms)])
    assert materialize(database_url, journal, other.key).success


def test_missing_privilege_fails_the_run_at_once(database_url: str, journal: Path) -> None:
    write_segment(journal, WINDOW, "seg.jsonl", [fill(70, T0)])
    materialize(database_url, journal)  # creates the tables as the owner
    role = f"reader_{os.getpid()}"
    with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        reader_url = dburl.parse(database_url).set(username=role, password=None)
        url = reader_url.render_as_string(hide_password=False)
        write_segment(journal, WINDOW, "seg-2.jsonl", [fill(71, T0)])
        result = materialize(url, journal, raise_on_error=False)
        assert not result.success
        text = _failure_text(result)
        assert "InsufficientPrivilege" in text and f"window {KEY}" in text
        assert not any(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)
        assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2,)]
    finally:
        with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_both_url_schemes_are_accepted(database_url: str, journal: Path, scheme: str) -> None:
    write_segment(journal, WINDOW, "seg.jsonl", [fill(80, T0)])
    url = dburl.parse(database_url).set(drivername=scheme).render_as_string(hide_password=False)
    assert url.startswith(scheme + "://")
    assert metadata(materialize(url, journal))["rows_inserted"] == 2


def test_a_simulated_hour_is_recorded_exactly(database_url: str, journal: Path) -> None:
    from competition_pipeline.tools import simulate

    stats = simulate.write_hour(journal, WINDOW, 3_000)
    meta = metadata(materialize(database_url, journal))
    assert meta["rows_inserted"] == stats.rows_expected
    assert meta["fills_read"] == stats.fills and meta["skipped_messages"] == stats.others
    assert meta["rejects"] == 0 and meta["conflicts"] == 0


def test_least_privilege_role_records_a_window(database_url: str, journal: Path) -> None:
    from competition_pipeline.store.database import CompetitionStore

    CompetitionStore(database_url).ensure_schema()  # the owner's one-time step
    with recorder_role(database_url) as url:
        write_segment(
            journal,
            WINDOW,
            "s.jsonl",
            [fill(1, T0), fill(2, T0, symbol="x'; DROP TABLE competition_fill_events;--")],
        )
        meta = metadata(materialize(url, journal))
        assert (meta["rows_inserted"], meta["rejects"]) == (2, 1)
        ((reason,),) = query(database_url, "SELECT reason FROM competition_fill_rejects")
        assert reason.startswith("symbol:") and "DROP TABLE" in reason
        assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2,)]


# --- metadata that means what it says (issue 14, items 5 and 6) ---------------------------------


def test_metadata_names_the_table_and_counts_only_this_runs_inserts(
    database_url: str, journal: Path
) -> None:
    hand_journal(journal)
    first = metadata(materialize(database_url, journal))
    assert first["dagster/table_name"] == "competition_fill_events"
    assert first["dagster/partition_row_count"] == 5  # rows the window holds, duplicates once
    assert first["rows_per_second"] > 0
    assert first["journal_data"] is True and first["open_hour"] is False
    assert "lag_seconds" not in first  # a closed hour's newest fill is old by design
    for _ in range(2):  # a re-run inserts nothing: no rate to plot, the same row count
        again = metadata(materialize(database_url, journal))
        assert again["rows_inserted"] == 0 and "rows_per_second" not in again
        assert again["dagster/partition_row_count"] == 5


def test_a_missing_hour_is_told_apart_from_an_hour_without_trades(
    database_url: str, journal: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    missing = materialize(database_url, journal, instance=instance)
    assert missing.success
    meta = metadata(missing)
    assert meta["journal_data"] is False and meta["segments"] == 0
    assert meta["dagster/partition_row_count"] == 0
    warnings = [
        e.user_message
        for e in instance.all_logs(missing.run_id)
        if e.level == 30 and "no journal data" in e.user_message
    ]
    assert len(warnings) == 1 and KEY in warnings[0]

    write_segment(journal, WINDOW, "seg-0001.jsonl.gz", [{"type": "Heartbeat"}])
    quiet = materialize(database_url, journal, instance=instance)
    meta = metadata(quiet)
    assert meta["journal_data"] is True and meta["segments"] == 1 and meta["fills_read"] == 0
    assert not [e for e in instance.all_logs(quiet.run_id) if e.level == 30]


def test_a_range_warns_once_about_its_hours_missing_from_the_journal(
    database_url: str, journal: Path
) -> None:
    windows = [Window(WINDOW.start + i * HOUR) for i in range(4)]
    write_segment(journal, windows[1], "seg.jsonl", [fill(100, windows[1].start_ms)])
    tags = {
        "dagster/asset_partition_range_start": windows[0].key,
        "dagster/asset_partition_range_end": windows[-1].key,
    }
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(database_url, journal, key=None, tags=tags, instance=instance)
    data = {
        e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert [data[w.key]["journal_data"].value for w in windows] == [False, True, False, False]
    (warning,) = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 30]
    assert f"{windows[0].key}, {windows[2].key}, {windows[3].key} (no segment" in warning
