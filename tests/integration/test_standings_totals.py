"""Standings from the per-window totals equal the standings over the rows (the release before's
query, tests/helpers/standings.py), rank by rank and decimal by decimal, for every shape of
competition, after loads, a late fill into a closed hour, a rebuild's apply and undo, and
retention; and the totals are always their window's rows'."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from competition_pipeline.defs.resources import FillSourceResource
from competition_pipeline.fills.windows import HOUR
from competition_pipeline.recording.rebuild import rebuild_windows, undo_rebuild
from competition_pipeline.store import months
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.store.rebuild import RebuildSession
from competition_pipeline.store.standings import Competitions
from tests.helpers.journal import fill, write_segment
from tests.helpers.rebuild import old_release
from tests.helpers.runs import materialize
from tests.helpers.sql import query
from tests.helpers.standings import (
    HOURS,
    WALLETS,
    reference,
    reference_newest,
    write_varied_journal,
)

MIN = dt.timedelta(minutes=1)
MS = dt.timedelta(milliseconds=1)
H0, H1, H2, H3 = HOURS
#: id -> (start, end, win): whole windows only; both edges inside hours, across the month
#: boundary; both edges in one hour; one millisecond of an hour then whole ones; one
#: millisecond only; November only (it outlives October's retention).
SHAPES = {
    "whole": (H0.start, H3.end, "pnl"),
    "edges": (H0.start + 17 * MIN + 123 * MS, H3.start + 41 * MIN, "pnl"),
    "one-hour": (H1.start + 5 * MIN, H1.start + 50 * MIN, "volume"),
    "last-ms": (H1.end - MS, H3.start, "volume"),
    "first-ms": (H2.start, H2.start + MS, "pnl"),
    "november": (H2.start, H3.end + 3 * HOUR, "pnl"),
}
#: Registered everywhere from the start (N never trades); D is registered later, in "edges"
#: after its first hours were recorded (a wallet registered after the competition started).
EARLY = [WALLETS[n] for n in "ABCEFN"]


def standings_of(competitions: Competitions, competition_id: str) -> list[tuple]:
    rows = competitions.refresh(competition_id)
    return [(s.rank, s.wallet, s.pnl, s.volume, s.trades, s.fees, s.medal) for s in rows]


def assert_equal_to_the_rows(url: str, competitions: Competitions) -> None:
    """Every competition's standings from the totals are the rows' (the decimals as text too:
    the same scale), and so is the newest fill they name; every window's totals are its rows'."""
    for competition_id in competitions.all_ids():
        ours = standings_of(competitions, competition_id)
        theirs = reference(url, competition_id)
        assert ours == theirs, competition_id
        assert [tuple(map(str, r)) for r in ours] == [tuple(map(str, r)) for r in theirs]
        newest = competitions.standings(competition_id)[0]
        expected = reference_newest(url, competition_id)
        assert (newest.through_fill_ts, newest.through_trade_id) == (expected or (None, None))
    for window in HOURS:
        assert competitions.store.totals_mismatches(window) == [], window.key


@pytest.fixture
def competitions(database_url: str) -> Competitions:
    store = CompetitionStore(database_url)
    competitions = Competitions(store)
    for competition_id, (start, end, win) in SHAPES.items():
        competitions.create(competition_id, competition_id, start, end, win)
        for wallet in EARLY:
            competitions.register(competition_id, wallet)
    return competitions


def test_standings_from_totals_equal_the_rows_through_loads_late_fills_rebuild_and_retention(
    database_url: str, journal: Path, competitions: Competitions, monkeypatch
) -> None:
    url = database_url
    write_varied_journal(journal)
    old_release(monkeypatch)  # recorded with older rules: a rebuild will change the fees
    for window in HOURS[:3]:
        assert materialize(url, journal, window.key).success
    assert_equal_to_the_rows(url, competitions)
    # A wallet registered once the competition is under way; the last hour recorded.
    competitions.register("edges", WALLETS["D"])
    assert materialize(url, journal, H3.key).success
    assert_equal_to_the_rows(url, competitions)
    assert query(url, "SELECT count(*) FROM competition_fill_window_totals")[0][0] > 20
    assert query(url, "SELECT count(*) FROM competition_fill_rejects") == [(0,)]
    assert query(url, "SELECT count(*) FROM competition_fill_events WHERE is_self_trade")[0][0]

    # A late fill into a closed hour: A's trade volume in H1 grows by exactly its notional.
    before = {s.wallet: s for s in competitions.standings("whole")}[WALLETS["A"]]
    late = fill(
        9_999,
        H1.start_ms + 60_000,
        taker_wallet_address=WALLETS["A"],
        maker_wallet_address=WALLETS["U"],
        price="2.5",
        size="4",
    )
    write_segment(journal, H1, "seg-2.jsonl", [late])
    assert materialize(url, journal, H1.key).success
    assert_equal_to_the_rows(url, competitions)
    after = {s.wallet: s for s in competitions.standings("whole")}[WALLETS["A"]]
    assert (after.volume - before.volume, after.trades - before.trades) == (10, 1)

    # A rebuild with today's rules (the makers' fees change), then its undo.
    monkeypatch.undo()
    source = FillSourceResource(root=str(journal)).source()
    store = competitions.store
    report = rebuild_windows(source, store, [H1, H2], apply=True, reason="maker fee rule")
    assert report.changed and report.standings  # the rebuild changed standings
    assert_equal_to_the_rows(url, competitions)
    undo_rebuild(store, report.rebuild_id, reason="back")
    assert_equal_to_the_rows(url, competitions)

    # Retention takes October out (none of these competitions is running): its totals go too.
    retired = months.retire(store, 1, today=dt.date(2026, 12, 15))
    assert retired.dropped == ["competition_fill_events_2026_10"]
    assert query(
        url,
        "SELECT count(*) FROM competition_fill_window_totals WHERE window_start < %s",
        H2.start,
    ) == [(0,)]
    assert_equal_to_the_rows(url, competitions)
    assert any(s.trades for s in competitions.standings("november"))


def test_a_rebuild_reports_only_the_standings_its_windows_change(
    database_url: str, journal: Path, competitions: Competitions, monkeypatch
) -> None:
    """Both sides of a rebuild's standings effect come from one snapshot: fills a follower
    commits into another window while the rebuild runs change no wallet in its report."""
    url = database_url
    write_varied_journal(journal)
    old_release(monkeypatch)
    for window in (H0, H1):
        assert materialize(url, journal, window.key).success
    monkeypatch.undo()
    source = FillSourceResource(root=str(journal)).source()
    b, u = WALLETS["B"], WALLETS["U"]
    big = fill(77_777, H3.start_ms + 5, taker_wallet_address=b, maker_wallet_address=u)
    big["fill"].update(price="1000", size="1000")
    write_segment(journal, H3, "seg-9.jsonl", [big])
    effect = RebuildSession.standing_effect

    def follower_commits_first(self, ids):  # after the windows' transactions, before the effect
        assert materialize(url, journal, H3.key).success
        return effect(self, ids)

    monkeypatch.setattr(RebuildSession, "standing_effect", follower_commits_first)
    report = rebuild_windows(source, competitions.store, [H0], apply=True, reason="maker fee rule")
    monkeypatch.undo()
    assert report.changed and report.standings
    changed = {(s.competition_id, s.wallet) for s in report.standings}
    # B's 1,000,000 of volume in H3 moved B in "whole" and "november"; the report does not say so.
    assert not any(s.volume[1] and "1000000" in s.volume[1] for s in report.standings)
    assert all(competition in ("whole", "edges") for competition, _ in changed)  # H0's only
    assert_equal_to_the_rows(url, competitions)
    assert {s.wallet: s for s in competitions.standings("november")}[b].volume >= 1_000_000


@pytest.fixture
def recorded(database_url: str, journal: Path) -> tuple[str, Competitions, list[int]]:
    """The varied journal recorded; with the instants (ms from H0's start) where a period's
    edge matters most: each fill's time and the one after it, and each hour's boundaries."""
    write_varied_journal(journal)
    for window in HOURS:
        materialize(database_url, journal, window.key)
    fills = query(
        database_url,
        "SELECT DISTINCT (extract(epoch FROM fill_ts - %s) * 1000)::bigint"
        " FROM competition_fill_events",
        H0.start,
    )
    instants = sorted(
        {ms + d for (ms,) in fills for d in (0, 1)} | {h * 3_600_000 for h in range(-1, 6)}
    )
    return database_url, Competitions(CompetitionStore(database_url)), instants


_ANY = st.integers(min_value=-30 * 60_000, max_value=4 * 3_600_000 + 30 * 60_000)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    win=st.sampled_from(["pnl", "volume"]),
    wallets=st.sets(st.sampled_from(sorted(WALLETS.values())), min_size=1),
)
def test_any_period_and_any_wallets_rank_as_over_the_rows(recorded, data, win, wallets) -> None:
    url, competitions, instants = recorded
    instant = st.one_of(st.sampled_from(instants), _ANY)
    a = data.draw(instant, label="start offset ms")
    b = data.draw(instant.filter(lambda x: x != a), label="end offset ms")
    start, end = (H0.start + min(a, b) * MS, H0.start + max(a, b) * MS)
    competition_id = f"p{len(competitions.all_ids())}"
    competitions.create(competition_id, competition_id, start, end, win)
    for wallet in wallets:
        competitions.register(competition_id, wallet)
    ours = standings_of(competitions, competition_id)
    theirs = reference(url, competition_id)
    assert [tuple(map(str, r)) for r in ours] == [tuple(map(str, r)) for r in theirs]
    newest = competitions.standings(competition_id)[0]
    assert (newest.through_fill_ts, newest.through_trade_id) == (
        reference_newest(url, competition_id) or (None, None)
    )
