"""The open hour's follower: one run tails its window and commits every second or so.

Asserted on what the database committed (offsets, rows, totals), never on wall time: the clock of
``follow_window`` is the test's where it can be, and a follower run ends at a ``until`` a few
seconds ahead (the lateness setting moved so the hour "closes" then).
"""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import reconcile_window, window_totals
from competition_pipeline.recording.live_hour import follow_window
from competition_pipeline.store.database import CompetitionStore, LeaseLost
from competition_pipeline.store.standings import Competitions
from tests.helpers.follower import (
    follow_briefly,
    follow_in_rounds,
    kill_after,
    open_window,
    start_follower,
    wait_until,
    writing,
)
from tests.helpers.journal import T0, W1, W2, WINDOW, append, fill, line, write_segment
from tests.helpers.sql import query

SEGMENT = "live.jsonl"


def _lines(first: int, count: int, start_ms: int) -> str:
    return "".join(line(fill(t, start_ms + t)) + "\n" for t in range(first, first + count))


def _committed_lines(store: CompetitionStore, window: Window) -> int:
    committed = store.committed_positions().get(window)
    if committed is None or not committed.positions:
        return 0
    return sum(p["lines"] for p in committed.positions.values())


def test_a_follower_commits_each_round_what_was_appended_with_its_offsets(
    database_url: str, journal: Path
) -> None:
    """N appends between rounds give N small loads, each reading only what was appended and
    committing its offset with its rows; a round with nothing new commits nothing."""
    segment = write_segment(journal, WINDOW, SEGMENT, [fill(1, T0 + 1)])
    fills = follow_in_rounds(
        JournalSource(journal),
        database_url,
        WINDOW,
        lambda first, n: append(segment, _lines(first, n, T0)),
    )
    assert _committed_lines(CompetitionStore(database_url), WINDOW) == fills


def test_past_its_hour_a_follower_also_commits_the_next_hour_until_it_ends(
    database_url: str, journal: Path
) -> None:
    """The next hour's first fills are committed by the closing hour's follower (its lateness)
    while the next hour's own follower is requested and started; before the hour ends, never."""
    following = Window(WINDOW.start - dt.timedelta(hours=1))
    write_segment(journal, following, SEGMENT, [fill(1, following.start_ms + 1)])
    nxt = write_segment(journal, WINDOW, SEGMENT, [fill(2, T0 + 2)])
    store = CompetitionStore(database_url)
    store.ensure_schema()
    clock = [WINDOW.start.timestamp() - 2]

    def sleep(_: float) -> None:
        clock[0] += 1
        append(nxt, _lines(100 + int(clock[0]) % 100, 1, T0))

    reports = follow_window(
        JournalSource(journal),
        store,
        following,
        until=WINDOW.start.timestamp() + 2,
        bridge=WINDOW,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    windows = [r.window for r in reports if r is not None]
    assert windows == [following.key, WINDOW.key, WINDOW.key, WINDOW.key]  # from its start on
    assert _committed_lines(store, WINDOW) == sum(1 for _ in nxt.open())


def test_a_follower_killed_mid_hour_is_resumed_from_its_committed_offset(
    database_url: str, journal: Path
) -> None:
    """``kill -9`` of a follower's process while fills are appended: the next follower starts
    from the committed offsets, and the window ends exact (nothing missing, nothing twice)."""
    window = open_window()
    start = window.start_ms
    segment = write_segment(journal, window, SEGMENT, [])
    append(segment, _lines(1, 200, start))
    store = CompetitionStore(database_url)
    store.ensure_schema()
    follower = start_follower(database_url, {"root": str(journal)}, window)
    try:
        wait_until(lambda: _committed_lines(store, window) == 200)
        append(segment, _lines(201, 100, start))
        wait_until(lambda: _committed_lines(store, window) == 300)  # it follows: a second load
        trades = itertools.count(301, 5)
        with writing(lambda: append(segment, _lines(next(trades), 5, start))):
            kill_after(follower, 1.0)
    finally:
        if follower.poll() is None:
            follower.kill()
    committed_before = _committed_lines(store, window)
    assert committed_before >= 300
    result = follow_briefly(database_url, {"root": str(journal)}, window, 2.0)
    assert result.success
    fills = sum(1 for _ in segment.open())
    assert _committed_lines(store, window) == fills
    assert query(
        database_url, "SELECT count(*), count(DISTINCT trade_id) FROM competition_fill_events"
    ) == [(2 * fills, fills)]
    totals = window_totals(store, window)
    assert totals is not None
    assert (totals.lines_read, totals.rows_inserted, totals.conflicts) == (fills, 2 * fills, 0)
    check = reconcile_window(JournalSource(journal), store, window)
    assert (check.missing, check.unexpected) == (0, 0)


def test_the_hours_close_ends_the_follower_with_its_materialization_and_checks(
    database_url: str, journal: Path
) -> None:
    """The follower commits while fills arrive, keeps a running competition's standings, and
    once its hour is closed past its lateness ends with the window's final materialization (its
    totals) and the three checks evaluated for its partition."""
    window = open_window()
    start = window.start_ms
    segment = write_segment(journal, window, SEGMENT, [fill(1, start + 1)])
    store = CompetitionStore(database_url)
    store.ensure_schema()
    competitions = Competitions(store)
    competitions.create("live", "Live", window.start, window.end, "volume")
    competitions.register("live", W1)
    competitions.register("live", W2)
    trades = itertools.count(2, 3)
    with (
        dg.instance_for_test() as instance,
        writing(lambda: append(segment, _lines(next(trades), 3, start)), every=0.05),
    ):
        result = follow_briefly(
            database_url, {"root": str(journal)}, window, 4.0, instance=instance
        )
        reported = instance.fetch_materializations(
            dg.AssetKey("competition_standings"), limit=1
        ).records
    assert result.success
    events = result.get_asset_materialization_events()
    final = {k: v.value for k, v in events[-1].materialization.metadata.items()}
    assert events[-1].materialization.partition == window.key
    assert final["follower"] == "final"
    assert final["follower_loads"] > 1  # it followed: more than one load in one run
    # The fills appended after the run's last read are the next run's (the sensor asks for it).
    recorded = _committed_lines(store, window)
    assert final["lines_read"] == recorded
    assert final["rows_inserted"] == final["dagster/partition_row_count"] == 2 * recorded
    assert final["accounting_balanced"] is True
    evaluations = result.get_asset_check_evaluations()
    assert sorted(e.check_name for e in evaluations) == [
        "no_conflicting_duplicates",
        "reconciles_with_journal",
        "rejects_within_budget",
    ]
    assert all(e.passed and e.partition == window.key for e in evaluations)
    (newest,) = query(
        database_url, "SELECT max(trade_id), max(fill_ts) FROM competition_fill_events"
    )
    standings = competitions.standings("live")
    assert {s.through_trade_id for s in standings} == {newest[0]}
    assert {s.through_fill_ts for s in standings} == {newest[1]}
    assert sum(s.trades for s in standings) == 2 * recorded
    # The UI's leaderboard is the one the follower left, saying when and by whom.
    (leaderboard,) = reported
    meta = {k: v.value for k, v in leaderboard.asset_materialization.metadata.items()}
    assert meta["refreshed_by"] == f"the follower of {window.key} (run {result.run_id})"
    assert meta["computed_at"] == standings[0].computed_at.timestamp()
    assert (
        f"(trade {newest[0]})" in meta["top_ten"]
        and "competition-pipeline standings" in (meta["current_standings"])
    )


def test_a_follower_that_lost_the_hour_has_its_next_commit_refused(
    database_url: str, journal: Path
) -> None:
    """Fencing: follower A holds the hour and commits; B takes the hour over (newest wins); A's
    next load is refused inside its own transaction (nothing of it committed) and B's commits."""
    segment = write_segment(journal, WINDOW, SEGMENT, [fill(1, T0 + 1)])
    store = CompetitionStore(database_url)
    store.ensure_schema()
    source = JournalSource(journal)
    lease_a = store.take_hour(WINDOW, "run-a")
    a = follow_window(source, store, WINDOW, until=1e12, lease=lease_a, sleep=lambda _: None)
    assert next(a) is not None  # A's first load committed
    assert _committed_lines(store, WINDOW) == 1
    lease_b = store.take_hour(WINDOW, "run-b")
    assert (lease_b.generation, lease_b.previous_run) == (lease_a.generation + 1, "run-a")
    # A run older than the holder (its step retried after it was marked dead) does not take it.
    with pytest.raises(LeaseLost, match="older than run run-b"):
        store.take_hour(WINDOW, "run-a", run_created=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    append(segment, _lines(2, 5, T0))
    with pytest.raises(LeaseLost, match="held by run run-b"):
        next(a)
    a.close()
    assert _committed_lines(store, WINDOW) == 1  # nothing of A's refused load
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2,)]
    b = follow_window(source, store, WINDOW, until=0, lease=lease_b)
    assert [r.lines_read for r in b if r is not None] == [5]
    assert _committed_lines(store, WINDOW) == 6
    assert store.hour_holders() == {WINDOW: ("run-b", lease_b.generation)}


def test_two_follower_runs_of_one_hour_racing_the_loser_ends_without_writing(
    database_url: str, journal: Path
) -> None:
    """Two follower runs of one hour at once (a redelivery, two requests racing): the one that
    started later takes the hour; the other's next commit is refused and its run ends by itself,
    successfully, without writing again; the window ends exact."""
    window = open_window()
    start = window.start_ms
    segment = write_segment(journal, window, SEGMENT, [])
    append(segment, _lines(1, 50, start))
    store = CompetitionStore(database_url)
    store.ensure_schema()
    first = start_follower(database_url, {"root": str(journal)}, window)
    try:
        wait_until(lambda: _committed_lines(store, window) == 50)
        (holder, generation), *_ = store.hour_holders().values()
        trades = itertools.count(51, 5)
        with writing(lambda: append(segment, _lines(next(trades), 5, start)), every=0.1):
            second = follow_briefly(database_url, {"root": str(journal)}, window, 4.0)
            # The first run ends by itself once its next load is refused.
            assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert second.success
    run_id = second.dagster_run.run_id
    assert run_id != holder
    followers = query(
        database_url, "SELECT run_id, generation, released_why FROM competition_fill_followers"
    )
    assert followers == [(None, generation + 1, "closed")]
    final = second.get_asset_materialization_events()[-1].materialization.metadata
    assert final["follower_took_over_from"].value == holder
    fills = sum(1 for _ in segment.open())
    check = reconcile_window(JournalSource(journal), store, window)
    assert (check.missing, check.unexpected) == (0, 0)
    assert _committed_lines(store, window) <= fills


def test_a_follower_stopped_with_sigterm_commits_hands_the_hour_back_and_succeeds(
    database_url: str, journal: Path
) -> None:
    """SIGTERM to a follower's process after it reported progress several times (Dagster's
    interrupt boundary is entered again at every resumption of the step): its last load
    commits, the hour is handed back saying why, and the run ends successfully (exit 0: the
    in-process run raises on a failure); the next follower takes the hour at once."""
    window = open_window()
    start = window.start_ms
    segment = write_segment(journal, window, SEGMENT, [])
    append(segment, _lines(1, 20, start))
    store = CompetitionStore(database_url)
    store.ensure_schema()
    follower = start_follower(
        database_url, {"root": str(journal)}, window, TEST_PROGRESS_SECONDS="1"
    )
    try:
        wait_until(lambda: _committed_lines(store, window) == 20)
        time.sleep(2.5)  # progress materializations yielded (the step resumed since)
        append(segment, _lines(21, 10, start))
        wait_until(lambda: _committed_lines(store, window) == 30)
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(timeout=60) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
    ((holder, why),) = query(
        database_url, "SELECT run_id, released_why FROM competition_fill_followers"
    )
    assert holder is None and why.startswith("stopped: SIGTERM at "), why
    assert _committed_lines(store, window) == 30
    lease = store.take_hour(window, "the-next-follower")
    assert lease.previous_run is None  # handed back: nobody to take it from
