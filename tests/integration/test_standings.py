"""Competition standings, hand-computed, through Dagster and the CLI."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs.resources import CompetitionDatabase
from competition_pipeline.defs.standings import competition_standings, standings_refresh_sensor
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.store.standings import CompetitionError, Competitions
from competition_pipeline.tools import cli
from tests.helpers.journal import W1, W2, W3, fill, write_segment
from tests.helpers.runs import materialize

W4 = "0x4444444444444444444444444444444444444444"  # trades, never registered
W5 = "0x5555555555555555555555555555555555555555"  # registered, no fills
W6 = "0x6666666666666666666666666666666666666666"
W7 = "0x7777777777777777777777777777777777777777"  # registered, no fills
WINDOW = Window.from_key("2026-11-20-03:00")
T0, END = WINDOW.start_ms, WINDOW.end_ms


def fills_journal(journal: Path) -> None:
    before, after = Window(WINDOW.start - HOUR), Window(WINDOW.start + HOUR)
    write_segment(
        journal,
        WINDOW,
        "seg-1.jsonl",
        [
            # At the start (included): rebate for the maker, builder fee for the taker.
            fill(
                1,
                T0,
                price="10",
                size="2",
                fee="1",
                taker_realized_pnl="5",
                builder_code_address=W4,
                builder_code_fee="0.2",
                accounting={"taker_fee": "1", "maker_fee": "-0.5"},
            ),
            # One millisecond before the end (included); the maker is not registered.
            fill(
                2,
                END - 1,
                taker_wallet_address=W3.upper().replace("0X", "0x"),
                maker_wallet_address=W4,
                price="5",
                size="1",
                taker_realized_pnl="-1",
                accounting={"taker_fee": "0.1", "maker_fee": "0.1"},
            ),
            # A self-trade: excluded from standings.
            fill(
                4,
                T0 + 10,
                taker_wallet_address=W1,
                maker_wallet_address=W1,
                price="1000",
                size="1",
                taker_realized_pnl="999",
            ),
            # Ties W2 on pnl (0.5) with more volume (40).
            fill(
                6,
                T0 + 20,
                taker_wallet_address=W6,
                maker_wallet_address=W4,
                price="20",
                size="2",
                taker_realized_pnl="1",
                accounting={"taker_fee": "0.5", "maker_fee": "0"},
            ),
        ],
    )
    # At the end (excluded) and one millisecond before the start (excluded).
    write_segment(journal, after, "seg-1.jsonl", [fill(3, END, price="100", size="1")])
    write_segment(journal, before, "seg-1.jsonl", [fill(5, T0 - 1, price="100", size="1")])


@pytest.fixture
def competitions(database_url: str) -> Competitions:
    store = CompetitionStore(database_url)
    store.ensure_schema()
    competitions = Competitions(store)
    competitions.create("c1", "November sprint", WINDOW.start, WINDOW.end, "pnl")
    for wallet in (W1, W2, W3.upper().replace("0X", "0x"), W5, W6, W7):
        competitions.register("c1", wallet)
    return competitions


def run_standings(database_url: str, instance=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [competition_standings],
        resources={"database": CompetitionDatabase(url=database_url)},
        instance=instance,
    )


def table(competitions: Competitions) -> list[tuple]:
    return [
        (s.rank, s.wallet, s.pnl, s.volume, s.trades, s.fees, s.medal)
        for s in competitions.standings("c1")
    ]


def test_standings_are_computed_by_hand(database_url: str, journal: Path, competitions) -> None:
    fills_journal(journal)
    for key in ("2026-11-20-02:00", "2026-11-20-03:00", "2026-11-20-04:00"):
        assert materialize(database_url, journal, key).success
    result = run_standings(database_url)
    assert table(competitions) == [
        (1, W1, Decimal("3.8"), Decimal("20"), 1, Decimal("1"), 1),  # 5 - 1 - 0.2
        (2, W6, Decimal("0.5"), Decimal("40"), 1, Decimal("0.5"), 2),  # tie on pnl, more volume
        (3, W2, Decimal("0.5"), Decimal("20"), 1, Decimal("-0.5"), 3),  # 0 - (-0.5): a rebate
        (4, W5, Decimal("0"), Decimal("0"), 0, Decimal("0"), None),  # no fills; W5 < W7
        (5, W7, Decimal("0"), Decimal("0"), 0, Decimal("0"), None),
        (6, W3, Decimal("-1.1"), Decimal("5"), 1, Decimal("0.1"), None),  # -1 - 0.1
    ]
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["leader_pnl"].value == 3.8 and meta["participants"].value == 6
    assert f"`{W1}`" in meta["top_ten"].value

    # A late fill into the hour: re-record the window, refresh, and W3 leads.
    write_segment(
        journal,
        WINDOW,
        "seg-2.jsonl",
        [
            fill(
                7,
                T0 + 30,
                taker_wallet_address=W3,
                maker_wallet_address=W4,
                price="1",
                size="1",
                fee="0",
                taker_realized_pnl="10",
                accounting=None,
            ),
        ],
    )
    materialize(database_url, journal, WINDOW.key)
    run_standings(database_url)
    after = table(competitions)
    assert after[0][:3] == (1, W3, Decimal("8.9")) and after[0][6] == 1
    # Re-running changes nothing.
    run_standings(database_url)
    assert table(competitions) == after


def test_volume_competitions_rank_by_volume(database_url: str, journal: Path, competitions) -> None:
    fills_journal(journal)
    materialize(database_url, journal, WINDOW.key)
    competitions.create("v1", "Volume", WINDOW.start, WINDOW.end, "volume")
    for wallet in (W1, W2, W6):
        competitions.register("v1", wallet)
    rows = competitions.refresh("v1")
    assert [(s.rank, s.wallet) for s in rows] == [(1, W6), (2, W1), (3, W2)]  # W1 ties W2 on 20


def test_bad_input_is_refused(competitions) -> None:
    with pytest.raises(CompetitionError, match="0x \\+ 40 hex"):
        competitions.register("c1", "0x123")
    with pytest.raises(CompetitionError, match="no competition"):
        competitions.register("nope", W1)
    with pytest.raises(CompetitionError, match="already exists"):
        competitions.create("c1", "again", WINDOW.start, WINDOW.end, "pnl")
    with pytest.raises(CompetitionError, match="end after"):
        competitions.create("c2", "x", WINDOW.end, WINDOW.start, "pnl")


def test_cli_creates_registers_and_prints(database_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    args = ["competition", "create", "cli1", "--start", "2026-11-20T03:00Z"]
    assert cli.main([*args, "--end", "2026-11-21T00:00Z", "--win", "volume"]) == 0
    assert cli.main(["competition", "register", "cli1", W1.upper().replace("0X", "0x"), W2]) == 0
    assert cli.main(["competition", "register", "cli1", "not-a-wallet"]) == 2
    capsys.readouterr()
    assert cli.main(["standings", "cli1", "--refresh", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["rank"], r["wallet"], r["volume"], r["medal"]) for r in rows] == [
        (1, W1, "0", 1),
        (2, W2, "0", 2),
    ]
    assert cli.main(["standings", "cli1"]) == 0
    assert W1 in capsys.readouterr().out


def test_refresh_sensor_requests_a_run_for_overlapping_windows(
    database_url: str, journal: Path, competitions
) -> None:
    fills_journal(journal)
    resources = {"database": CompetitionDatabase(url=database_url)}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(standings_refresh_sensor(context), dg.SkipReason)
        materialize(database_url, journal, "2026-11-20-04:00", instance=instance)  # no overlap
        result = standings_refresh_sensor(context)
        assert result.run_requests == []
        materialize(database_url, journal, WINDOW.key, instance=instance)  # overlaps c1
        context = dg.build_sensor_context(
            instance=instance, cursor=result.cursor, resources=resources
        )
        result = standings_refresh_sensor(context)
        assert len(result.run_requests) == 1
        assert result.run_requests[0].tags["competitions"] == "c1"
        context = dg.build_sensor_context(
            instance=instance, cursor=result.cursor, resources=resources
        )
        assert isinstance(standings_refresh_sensor(context), dg.SkipReason)
