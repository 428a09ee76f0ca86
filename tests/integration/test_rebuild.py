"""Rebuild: a dry run's exact diff that writes nothing; an atomic, audited apply; an exact undo."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import psycopg
import pytest

from competition_pipeline.fills import rows
from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording import fill_events as recording
from competition_pipeline.recording.checks import WindowChecker
from competition_pipeline.recording.fill_events import record_window
from competition_pipeline.recording.rebuild import RebuildError, rebuild_windows, undo_rebuild
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.store.standings import Competitions
from tests.helpers.journal import W1, W2, W3, append, fill, line, write_segment
from tests.helpers.rebuild import (
    fills_table,
    old_release,
    other_rules,
    self_trade_as_two_rows,
    snapshot,
)
from tests.helpers.sql import execute, query, recorder_role

WINDOW = Window.from_key("2026-03-31-14:00")
T0 = WINDOW.start_ms


def journal_of(journal: Path) -> None:
    write_segment(
        journal,
        WINDOW,
        "s.jsonl",
        [
            fill(1, T0 + 1),
            fill(2, T0 + 2, taker_wallet_address=W2, maker_wallet_address=W1),
            fill(3, T0 + 3),
            "garbage",
        ],
    )


def recorded_by_old_release(
    journal: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> CompetitionStore:
    """The test journal, recorded into ``database_url`` by the older release's rules."""
    journal_of(journal)
    store = CompetitionStore(database_url)
    with monkeypatch.context() as patch:
        old_release(patch)
        record_window(JournalSource(journal), store, WINDOW)
    return store


def test_a_dry_run_lists_exactly_the_changed_rows_and_fields_and_writes_nothing(
    database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = recorded_by_old_release(journal, database_url, monkeypatch)
    before = snapshot(database_url)

    report = rebuild_windows(JournalSource(journal), store, [WINDOW])

    assert snapshot(database_url) == before  # byte for byte
    (diff,) = report.windows
    assert not report.applied
    assert (diff.added, diff.removed, diff.changed) == (0, 0, 3)  # the three maker rows
    assert diff.changed_by_field == {"fee": 3}
    assert diff.version_from == 2 and diff.version_to == recording.RECORDING_VERSION
    makers = {(s.trade_id, s.wallet) for s in diff.samples}
    assert makers == {(1, W2), (2, W1), (3, W2)}
    assert all(s.fields == {"fee": ("0.38", "-0.05")} for s in diff.samples)
    assert not diff.rejects.any and not diff.conflicts.any


def test_apply_equals_a_fresh_recording_keeps_the_old_rows_and_undo_restores_them_exactly(
    database_url: str, empty_database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = recorded_by_old_release(journal, database_url, monkeypatch)
    old_fills = fills_table(database_url)
    before = snapshot(database_url)

    report = rebuild_windows(
        JournalSource(journal), store, [WINDOW], apply=True, reason="maker fee rule fixed"
    )

    fresh = CompetitionStore(empty_database_url)
    fresh.ensure_schema()
    record_window(JournalSource(journal), fresh, WINDOW)
    assert fills_table(database_url) == fills_table(empty_database_url)
    kept = query(
        database_url,
        "SELECT change, trade_id, wallet, old_fee::text, changed_fields, version_from,"
        " version_to, reason FROM competition_fill_revisions WHERE rebuild_id = %s"
        " ORDER BY trade_id",
        report.rebuild_id,
    )
    ((summary_version,),) = query(
        database_url, "SELECT summary->>'version' FROM competition_fill_windows"
    )
    assert kept == [
        ("changed", t, w, "0.38", "fee", 2, recording.RECORDING_VERSION, "maker fee rule fixed")
        for t, w in ((1, W2), (2, W1), (3, W2))
    ]
    assert int(summary_version) == recording.RECORDING_VERSION
    # Applied once, a second rebuild finds nothing to change and touches nothing.
    after = snapshot(database_url)
    again = rebuild_windows(JournalSource(journal), store, [WINDOW], apply=True, reason="again")
    assert again.windows[0].unchanged and snapshot(database_url) == after

    undo_rebuild(store, report.rebuild_id, reason="back out")

    assert fills_table(database_url) == old_fills
    restored = snapshot(database_url)
    for table in ("competition_fill_events", "competition_fill_keys", "competition_fill_rejects"):
        assert restored[table] == before[table], table
    assert restored["competition_fill_windows"] == before["competition_fill_windows"]
    with pytest.raises(RebuildError, match="undone already"):
        undo_rebuild(store, report.rebuild_id, reason="twice")


def test_a_rule_change_that_adds_and_removes_rows(
    database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The older rule gave a self-trade two rows (taker and maker) instead of one "self" row.
    write_segment(
        journal,
        WINDOW,
        "s.jsonl",
        [fill(1, T0 + 1, taker_wallet_address=W3, maker_wallet_address=W3), fill(2, T0 + 2)],
    )
    store = CompetitionStore(database_url)
    with monkeypatch.context() as patch:
        other_rules(patch, self_trade_as_two_rows)
        record_window(JournalSource(journal), store, WINDOW)
    assert len(fills_table(database_url)) == 4

    dry = rebuild_windows(JournalSource(journal), store, [WINDOW])
    (diff,) = dry.windows
    assert (diff.added, diff.removed, diff.changed) == (0, 1, 1)  # W1's row goes; W3's is "self"
    # The self row: its own role and flag, and both legs' fees.
    assert diff.changed_by_field == {"counterparty": 1, "fee": 1, "is_self_trade": 1, "role": 1}

    rebuild_windows(JournalSource(journal), store, [WINDOW], apply=True, reason="self-trades")
    rows_now = fills_table(database_url)
    assert [(t, w, role) for t, w, role, *_ in rows_now] == [
        (1, W3, "self"),
        (2, W1, "taker"),
        (2, W2, "maker"),
    ]


def test_a_key_recorded_under_another_window_is_left_there_and_stays_a_conflict(
    database_url: str, empty_database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine sent trade 1 again an hour later with another time: a conflict with the row the
    # first hour recorded. The rebuild of the later hour finds it (its keys are not the window's
    # own), leaves the first hour's rows alone and keeps the conflict.
    later = Window.from_key("2026-03-31-15:00")
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0 + 1)])
    # Trade 5 is sent twice, the second time with another price: a conflict within the hour.
    again = fill(5, later.start_ms + 2, price="999.5")
    messages = [fill(1, later.start_ms + 1), fill(5, later.start_ms + 2), again]
    write_segment(journal, later, "s.jsonl", messages)
    store = CompetitionStore(database_url)
    record_window(JournalSource(journal), store, WINDOW)
    with monkeypatch.context() as patch:
        old_release(patch)
        record_window(JournalSource(journal), store, later)
    conflicts = (
        "SELECT window_start, source_file, line_no, wallet, trade_id, conflicts_with,"
        " differing_fields FROM competition_fill_conflicts ORDER BY trade_id, wallet"
    )
    recorded_conflicts = query(database_url, conflicts)
    assert [(r[3], r[4]) for r in recorded_conflicts] == [(W1, 1), (W2, 1), (W1, 5), (W2, 5)]

    report = rebuild_windows(
        JournalSource(journal), store, [later], apply=True, reason="maker fee rule fixed"
    )

    (diff,) = report.windows
    assert (diff.added, diff.removed, diff.changed) == (0, 0, 1)  # trade 5's maker row
    assert diff.rows_derived == 2 and not diff.conflicts.any
    assert query(database_url, conflicts) == recorded_conflicts
    fresh = CompetitionStore(empty_database_url)
    fresh.ensure_schema()
    for window in (WINDOW, later):
        record_window(JournalSource(journal), fresh, window)
    assert fills_table(database_url) == fills_table(empty_database_url)


def test_a_fill_whose_corrected_timestamp_moves_it_to_another_month(
    database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window is the first hour of April; the older rule read the timestamp an hour early,
    # so the row went to March's partition (the registry too).
    window = Window.from_key("2026-04-01-00:00")
    write_segment(journal, window, "s.jsonl", [fill(7, window.start_ms + 5)])
    store = CompetitionStore(database_url)
    execute(database_url, "SELECT competition_create_month('2026-03-01')")  # the old rule's month
    with monkeypatch.context() as patch:

        def early(fill_, *args):
            early_fill = msgspec.structs.replace(fill_, timestamp_ms=fill_.timestamp_ms - 3_600_000)
            return rows.fill_rows(early_fill, *args)

        other_rules(patch, early)
        record_window(JournalSource(journal), store, window)
    march = dt.datetime(2026, 3, 31, 23, 0, 0, 5000, tzinfo=dt.UTC)
    assert {r[6] for r in fills_table(database_url)} == {march}

    report = rebuild_windows(JournalSource(journal), store, [window], apply=True, reason="ts")

    assert report.windows[0].changed_by_field == {"fill_ts": 2}
    april = window.start + dt.timedelta(milliseconds=5)
    assert {r[6] for r in fills_table(database_url)} == {april}
    parts = query(
        database_url,
        "SELECT tableoid::regclass::text, count(*) FROM competition_fill_events GROUP BY 1",
    )
    keys = query(database_url, "SELECT fill_ts FROM competition_fill_keys")
    assert parts == [("competition_fill_events_2026_04", 2)]
    assert keys == [(april,), (april,)]


def test_standings_after_a_rebuild_equal_standings_from_a_fresh_recording(
    database_url: str, empty_database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_of(journal)
    store, fresh = CompetitionStore(database_url), CompetitionStore(empty_database_url)
    fresh.ensure_schema()
    start, end = WINDOW.start, WINDOW.end
    for s in (store, fresh):
        competitions = Competitions(s)
        competitions.create("c1", "c1", start, end, "pnl")
        for wallet in (W1, W2):
            competitions.register("c1", wallet)
    with monkeypatch.context() as patch:
        old_release(patch)
        record_window(JournalSource(journal), store, WINDOW)
    Competitions(store).refresh("c1")
    record_window(JournalSource(journal), fresh, WINDOW)
    expected = Competitions(fresh).refresh("c1")

    dry = rebuild_windows(JournalSource(journal), store, [WINDOW])
    assert {c.wallet for c in dry.standings} == {W1, W2}  # both wallets' pnl moves
    (w2,) = [c for c in dry.standings if c.wallet == W2]
    assert w2.pnl[0] != w2.pnl[1]
    rebuild_windows(JournalSource(journal), store, [WINDOW], apply=True, reason="fee rule")

    got = Competitions(store).standings("c1")
    assert [(s.wallet, s.rank, s.pnl, s.volume) for s in got] == [
        (s.wallet, s.rank, s.pnl, s.volume) for s in expected
    ]


def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(
    database_url: str, journal: Path
) -> None:
    journal_of(journal)
    store = CompetitionStore(database_url)
    record_window(JournalSource(journal), store, WINDOW)
    before = snapshot(database_url)
    empty = Window(WINDOW.end)
    with pytest.raises(RebuildError, match="needs a reason"):
        rebuild_windows(JournalSource(journal), store, [WINDOW], apply=True, reason=" ")
    with pytest.raises(RebuildError, match=f"no journal data for window {empty.key}"):
        rebuild_windows(JournalSource(journal), store, [WINDOW, empty], apply=True, reason="x")
    dry = rebuild_windows(JournalSource(journal), store, [WINDOW, empty])
    assert list(dry.refused) == [empty.key] and dry.windows[0].unchanged
    with pytest.raises(RebuildError, match="unknown id, or a dry run"):
        undo_rebuild(store, "rebuild-nope", reason="x")
    # A source that gives nothing for a window holding rows (an emptied segment here; a stream
    # that lost the window, which no listing shows) is refused, never emptied.
    for segment in journal.rglob("*.jsonl"):
        segment.write_text("")
    emptied = rebuild_windows(JournalSource(journal), store, [WINDOW], apply=True, reason="x")
    assert emptied.windows == [] and "holds 6 rows" in emptied.refused[WINDOW.key]
    assert snapshot(database_url) == before


def test_the_reconciliation_names_a_changed_rows_fields_and_says_to_run_a_rebuild_dry_run(
    database_url: str, journal: Path
) -> None:
    journal_of(journal)
    store = CompetitionStore(database_url)
    record_window(JournalSource(journal), store, WINDOW)
    execute(  # a fee set wrong by hand
        database_url,
        "UPDATE competition_fill_events SET fee = 9 WHERE trade_id = 2 AND wallet = %s",
        W1,
    )
    outcome = WindowChecker(store, JournalSource(journal)).reconciles_with_journal(WINDOW)
    assert not outcome.passed and outcome.metadata["changed"] == 1
    assert outcome.metadata["changed_fields"] == f"trade 2 {W1}: fee 9 -> -0.05"
    assert f"competition-pipeline rebuild --from {WINDOW.key} --to {WINDOW.key}" in (
        outcome.description or ""
    )
    # The dry run shows the same change; applied, the check passes again.
    (diff,) = rebuild_windows(JournalSource(journal), store, [WINDOW]).windows
    assert [s.describe() for s in diff.samples] == [f"changed trade 2 {W1}: fee 9 -> -0.05"]
    rebuild_windows(JournalSource(journal), store, [WINDOW], apply=True, reason="hand edit")
    assert WindowChecker(store, JournalSource(journal)).reconciles_with_journal(WINDOW).passed


def test_kill_9_during_apply_leaves_the_window_old_and_the_rerun_finishes_it(
    database_url: str, empty_database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_by_old_release(journal, database_url, monkeypatch)
    old = snapshot(database_url)
    env = {**os.environ, "COMPETITION_DATABASE_URL": database_url, "FILL_JOURNAL_DIR": str(journal)}
    command = [sys.executable, "-m", "competition_pipeline.tools.cli", "rebuild"]
    command += ["--from", WINDOW.key, "--to", WINDOW.key, "--apply", "--reason", "kill test"]
    # Holding the window's row makes the apply wait at its last statements, its rows already
    # replaced inside its transaction: then the process dies. (Watched from a connection of its
    # own: pg_stat_activity is read once per transaction.)
    with (
        psycopg.connect(dburl.libpq(database_url)) as holder,
        psycopg.connect(dburl.libpq(database_url), autocommit=True) as watcher,
    ):
        holder.execute("SELECT 1 FROM competition_fill_windows FOR UPDATE")
        process = subprocess.Popen(command, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            (waiting,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s",
                ("%INSERT INTO competition_fill_windows%",),
            ).fetchone()
            if waiting:
                break
            assert process.poll() is None and time.monotonic() < deadline, "apply never waited"
            time.sleep(0.05)
        replaced = watcher.execute(
            "SELECT count(*) FROM competition_fill_revisions"
        ).fetchone()  # nothing visible: the apply has not committed
        assert replaced == (0,)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        holder.rollback()
    deadline = time.monotonic() + 30
    while snapshot(database_url) != old:  # the server notices the dead client, rolls it back
        assert time.monotonic() < deadline, "the killed apply left the window changed"
        time.sleep(0.2)

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    fresh = CompetitionStore(empty_database_url)
    fresh.ensure_schema()
    record_window(JournalSource(journal), fresh, WINDOW)
    assert fills_table(database_url) == fills_table(empty_database_url)


def test_a_rebuild_and_a_recording_of_the_same_window_at_once_end_exact(
    database_url: str, empty_database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = recorded_by_old_release(journal, database_url, monkeypatch)
    segment = journal / "date=2026-03-31" / "hour=14" / "s.jsonl"
    for trade in range(10, 60):
        append(segment, line(fill(trade, T0 + trade)) + "\n")
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    workers = [
        threading.Thread(
            target=run, args=(lambda: record_window(JournalSource(journal), store, WINDOW),)
        ),
        threading.Thread(
            target=run,
            args=(
                lambda: rebuild_windows(
                    JournalSource(journal), store, [WINDOW], apply=True, reason="at once"
                ),
            ),
        ),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors
    # Whichever took the window's lock first, the other saw what it committed.
    fresh = CompetitionStore(empty_database_url)
    fresh.ensure_schema()
    record_window(JournalSource(journal), fresh, WINDOW)
    assert fills_table(database_url) == fills_table(empty_database_url)


def test_the_recorders_rights_dry_run_and_an_apply_with_them_fails_at_once_naming_the_url(
    database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_by_old_release(journal, database_url, monkeypatch)
    before = snapshot(database_url)
    with recorder_role(database_url) as url:
        recorder = CompetitionStore(url)
        (diff,) = rebuild_windows(JournalSource(journal), recorder, [WINDOW]).windows
        assert diff.changed == 3
        with pytest.raises(RebuildError) as refused:
            rebuild_windows(JournalSource(journal), recorder, [WINDOW], apply=True, reason="x")
        assert "COMPETITION_OWNER_DATABASE_URL" in str(refused.value)
        assert "competition_fill_events: UPDATE" in str(refused.value)
        with pytest.raises(RebuildError, match="COMPETITION_OWNER_DATABASE_URL"):
            undo_rebuild(recorder, "rebuild-x", reason="x")
    assert snapshot(database_url) == before


def test_the_command_line_shows_the_diff_applies_with_a_reason_undoes_and_says_the_status(
    database_url: str,
    journal: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from competition_pipeline.tools import cli

    recorded_by_old_release(journal, database_url, monkeypatch)
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    monkeypatch.setenv("FILL_JOURNAL_DIR", str(journal))
    before = snapshot(database_url)
    span = ["--from", WINDOW.key, "--to", WINDOW.key]

    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "windows recorded under version 2: 1" in out and f"{WINDOW.key} .. {WINDOW.key}" in out
    assert cli.main(["rebuild", *span]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing written" in out and "fee 3" in out
    assert f"changed trade 2 {W1}: fee 0.38 -> -0.05" in out
    assert "--apply --reason" in out
    assert cli.main(["rebuild", *span, "--json"]) == 0
    (window,) = json.loads(capsys.readouterr().out)["windows"]
    assert (window["changed"], window["changed_by_field"]) == (3, {"fee": 3})
    assert snapshot(database_url) == before
    assert cli.main(["rebuild", *span, "--apply"]) == 2
    assert "needs a reason" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="partition keys are YYYY-MM-DD-HH:00"):
        cli.main(["rebuild", "--from", "2026-03-31", "--to", WINDOW.key])

    assert cli.main(["rebuild", *span, "--apply", "--reason", "maker fee fix"]) == 0
    out = capsys.readouterr().out
    rebuild_id = out.split("undo: competition-pipeline rebuild --undo ")[1].split()[0]
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "windows recorded under version 3: 1" in out and rebuild_id in out
    assert cli.main(["rebuild", "--undo", rebuild_id]) == 0
    capsys.readouterr()
    restored = snapshot(database_url)
    assert restored["competition_fill_events"] == before["competition_fill_events"]
    assert cli.main(["rebuild", "--undo", "rebuild-unknown"]) == 2
    assert "unknown id" in capsys.readouterr().err
