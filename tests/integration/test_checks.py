"""Asset checks, strict mode and the accounting identity, through ``materialize``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import dagster as dg
import psycopg

from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.checks import RECONCILES
from competition_pipeline.recording.fill_events import MAX_STORED_REJECTS, reconcile_window
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.journal import KEY, T0, W1, W3, WINDOW, fill, write_segment
from tests.helpers.location import competition_fill_events
from tests.helpers.runs import ALL_CHECKS, materialize, metadata
from tests.helpers.sql import execute, query


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_clean_window_passes_every_check(database_url: str, journal: Path) -> None:
    write_segment(
        journal, WINDOW, "s.jsonl", [fill(1, T0), fill(2, T0 + 1, maker_wallet_address=W3)]
    )
    result = materialize(database_url, journal, checks=True)
    checks = evaluations(result)
    assert set(checks) == {
        "reconciles_with_journal",
        "no_conflicting_duplicates",
        "rejects_within_budget",
    }
    assert all(c.passed for c in checks.values())
    assert checks["reconciles_with_journal"].metadata["expected_rows"].value == 4
    assert checks["reconciles_with_journal"].metadata["stored_rows"].value == 4
    assert checks["reconciles_with_journal"].metadata["compared_by"].value == "digest"
    assert all(c.partition == KEY for c in checks.values() if hasattr(c, "partition"))


def test_conflicts_and_rejects_are_reported(database_url: str, journal: Path) -> None:
    write_segment(
        journal,
        WINDOW,
        "s.jsonl",
        [fill(1, T0), fill(1, T0, price="2"), "garbage", fill(2, T0, size="NaN")],
    )
    checks = evaluations(materialize(database_url, journal, checks=True))
    assert checks["reconciles_with_journal"].passed  # the conflict line is excluded by design
    # The careful path (a repeated key) records the digest of the rows the window should hold.
    assert checks["reconciles_with_journal"].metadata["compared_by"].value == "digest"
    conflicts = checks["no_conflicting_duplicates"]
    assert not conflicts.passed and conflicts.severity == dg.AssetCheckSeverity.ERROR
    assert conflicts.metadata["conflicts"].value == 2  # both wallet rows of the conflicting line
    rejects = checks["rejects_within_budget"]
    assert not rejects.passed and rejects.severity == dg.AssetCheckSeverity.WARN
    assert rejects.metadata["rejects"].value == 2
    assert rejects.metadata["by_reason"].value == {"invalid JSON": 1, "size": 1}
    strict_threshold = RecordingPolicy(rejects_error_threshold=1)
    checks = evaluations(materialize(database_url, journal, policy=strict_threshold, checks=True))
    assert checks["rejects_within_budget"].severity == dg.AssetCheckSeverity.ERROR


def test_reconciliation_finds_missing_and_unexpected_rows(database_url: str, journal: Path) -> None:
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0), fill(2, T0 + 1)])
    materialize(database_url, journal)
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        conn.execute("DELETE FROM competition_fill_events WHERE trade_id = 2 AND role = 'maker'")
        conn.execute(
            "INSERT INTO competition_fill_events SELECT 99, wallet, role, side, counterparty,"
            " is_self_trade, symbol, price, size, notional, fee, realized_pnl,"
            " builder_code_address, builder_code_fee, source_type, taker_order_id,"
            " maker_order_id, underlying_notional, fill_ts, window_start, recorded_at"
            " FROM competition_fill_events WHERE trade_id = 1 AND role = 'taker'"
        )
    # The blocking check fails the run (a blocking ERROR); its evaluation says why.
    result = materialize(database_url, journal, checks=True, raise_on_error=False)
    assert not result.success
    checks = evaluations(result)
    reconcile = checks["reconciles_with_journal"]
    # The re-run re-inserted the deleted row; the foreign row 99 stays unexpected.
    assert not reconcile.passed
    assert reconcile.metadata["unexpected"].value == 1
    assert "99" in reconcile.metadata["unexpected_sample"].value


def test_strict_mode_fails_the_run_and_commits_nothing(database_url: str, journal: Path) -> None:
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0), "garbage", "more garbage"])
    strict = RecordingPolicy(strict=True, max_rejects=1)
    result = materialize(database_url, journal, policy=strict, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "2 rejects exceed the limit of 1 (strict mode)" in str(failure.step_failure_data.error)
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(0,)]
    assert query(database_url, "SELECT count(*) FROM competition_fill_rejects") == [(0,)]
    by_fraction = RecordingPolicy(strict=True, max_reject_fraction=0.9)
    assert materialize(database_url, journal, policy=by_fraction).success


def _mutations(seed: int, count: int) -> list[str]:
    """Seeded random damage to valid lines: truncation, wrong types, huge numbers, odd unicode,
    deep nesting, 1 MB lines, dropped fields."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        message = fill(10_000 + i, T0 + rng.randrange(3_600_000))
        text = json.dumps(message)
        kind = rng.randrange(10)
        if kind == 0:
            text = text[: rng.randrange(len(text))]
        elif kind == 1:
            message["fill"][rng.choice(list(message["fill"]))] = rng.choice(
                [None, True, 1.5, -1, 2**70, "", [], {}, "x" * 50]
            )
            text = json.dumps(message)
        elif kind == 2:
            message["fill"]["price"] = "9" * rng.choice([39, 41, 400])
            text = json.dumps(message)
        elif kind == 3:
            message["fill"]["symbol"] = rng.choice(
                ["BTC-PERP\u0000", "ＢＴＣ-PERP", "BTC-٣-C", "é"]
            )
            text = json.dumps(message, ensure_ascii=rng.random() < 0.5)
        elif kind == 4:
            text = "[" * rng.choice([10, 2000]) + "]" * rng.choice([10, 2000])
        elif kind == 5 and i % 500 == 0:
            text = json.dumps({"type": "OrderFilled", "pad": "x" * 1_000_000, **message})
        elif kind == 6:
            del message["fill"][rng.choice(list(message["fill"]))]
            text = json.dumps(message)
        elif kind == 7:
            pos = rng.randrange(len(text))
            text = text[:pos] + rng.choice(["\ud800", "\x00", "\t", "🙂", "\\"]) + text[pos + 1 :]
        lines.append(text.replace("\n", " "))
    return lines


def test_fuzzed_lines_never_crash_and_the_identity_holds(database_url: str, journal: Path) -> None:
    lines = _mutations(seed=20261124, count=10_000)
    directory = journal / "date=2026-11-20" / "hour=03"
    directory.mkdir(parents=True)
    with (directory / "fuzz.jsonl").open("w", encoding="utf-8", errors="surrogatepass") as out:
        for text in lines:
            out.write(text + "\n")
    result = materialize(database_url, journal, checks=True)
    assert result.success
    meta = metadata(result)
    assert meta["lines_read"] == 10_000
    assert meta["accounting_balanced"] is True
    assert meta["rejects"] > 1_000 and meta["fills_read"] > 1_000
    identity = (
        meta["fills_recorded_or_present"]
        + meta["skipped_messages"]
        + meta["rejects"]
        + meta["conflicts"]
    )
    # Every fuzzed line ends with a newline, so there is no incomplete tail to add.
    assert identity == meta["lines_read"] and meta["incomplete_tails"] == 0
    stored_rejects = query(database_url, "SELECT count(*) FROM competition_fill_rejects")[0][0]
    # Each reject stored up to the window's bound, the rest counted (issue 33).
    assert stored_rejects == min(meta["rejects"], MAX_STORED_REJECTS)
    assert meta["rejects_not_stored"] == meta["rejects"] - stored_rejects
    assert evaluations(result)["reconciles_with_journal"].passed


def test_reconciliation_of_a_window_emptied_since_finds_every_row_missing(
    database_url: str, journal: Path
) -> None:
    """The comparison stages the journal's rows without inserting them: a window whose rows were
    all deleted is reported missing, not quietly re-inserted inside the check's transaction."""
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0), fill(2, T0 + 1)])
    materialize(database_url, journal)
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        conn.execute("DELETE FROM competition_fill_events")
    result = reconcile_window(JournalSource(journal), CompetitionStore(database_url), WINDOW)
    assert (result.expected_rows, result.stored_rows, result.missing) == (4, 0, 4)
    assert result.missing_sample[0][0] == 1
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(0,)]


RANGE = [Window(WINDOW.start + i * HOUR) for i in range(3)]
RANGE_TAGS = {
    "dagster/asset_partition_range_start": RANGE[0].key,
    "dagster/asset_partition_range_end": RANGE[-1].key,
}


def _range_journal(journal: Path) -> None:
    for i, window in enumerate(RANGE):
        write_segment(journal, window, "seg.jsonl", [fill(100 + i, window.start_ms + i)])


def by_check_and_window(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    found: dict[tuple[str, str], bool] = {}
    for e in result.get_asset_check_evaluations():
        assert e.partition is not None and (e.check_name, e.partition) not in found
        found[(e.check_name, e.partition)] = e.passed
    return found


def test_a_range_run_evaluates_every_check_for_every_window(
    database_url: str, journal: Path
) -> None:
    """A backfill range yields no output, so Dagster skips the check steps: the asset evaluates
    them per window, each with its window as partition."""
    _range_journal(journal)
    result = materialize(database_url, journal, key=None, tags=RANGE_TAGS, checks=True)
    assert result.success
    names = ("reconciles_with_journal", "no_conflicting_duplicates", "rejects_within_budget")
    assert by_check_and_window(result) == {(n, w.key): True for n in names for w in RANGE}
    # Without the checks in the run, the asset evaluates none.
    assert not materialize(
        database_url, journal, key=None, tags=RANGE_TAGS
    ).get_asset_check_evaluations()


def test_a_failed_blocking_check_in_a_range_run_fails_the_run(
    database_url: str, journal: Path
) -> None:
    _range_journal(journal)
    materialize(database_url, journal, key=None, tags=RANGE_TAGS)
    with psycopg.connect(dburl.libpq(database_url)) as conn:  # a foreign row in the 2nd window
        conn.execute(
            "INSERT INTO competition_fill_events SELECT 999, wallet, role, side, counterparty,"
            " is_self_trade, symbol, price, size, notional, fee, realized_pnl,"
            " builder_code_address, builder_code_fee, source_type, taker_order_id,"
            " maker_order_id, underlying_notional, fill_ts, window_start, recorded_at"
            " FROM competition_fill_events WHERE trade_id = 101 AND role = 'taker'"
        )
    result = materialize(
        database_url, journal, key=None, tags=RANGE_TAGS, checks=True, raise_on_error=False
    )
    assert not result.success
    reconcile = {w: p for (n, w), p in by_check_and_window(result).items() if n == RECONCILES}
    assert reconcile == {RANGE[0].key: True, RANGE[1].key: False, RANGE[2].key: True}


def _checks_alone(database_url: str, journal: Path, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [competition_fill_events, *ALL_CHECKS],
        selection=dg.AssetSelection.checks(*ALL_CHECKS),
        resources={
            "database": CompetitionDatabase(url=database_url),
            "fill_source": FillSourceResource(root=str(journal)),
            "policy": RecordingPolicy(),
        },
        raise_on_error=False,
        **kwargs,
    )


def test_checks_alone_over_a_range_fail_exactly_the_window_whose_rows_were_deleted(
    database_url: str, journal: Path
) -> None:
    _range_journal(journal)
    materialize(database_url, journal, key=None, tags=RANGE_TAGS)
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        conn.execute("DELETE FROM competition_fill_events WHERE trade_id = 102")
    result = _checks_alone(database_url, journal, tags=RANGE_TAGS)
    assert not result.success  # the blocking check failed
    assert not result.get_asset_materialization_events()  # nothing was recorded again
    found = by_check_and_window(result)
    assert len(found) == 9
    failed = [key for key, passed in found.items() if not passed]
    assert failed == [(RECONCILES, RANGE[2].key)]


def test_a_check_alone_for_one_partition_and_without_a_partition(
    database_url: str, journal: Path
) -> None:
    _range_journal(journal)
    materialize(database_url, journal, key=None, tags=RANGE_TAGS)
    result = _checks_alone(database_url, journal, tags={"dagster/partition": RANGE[1].key})
    assert result.success
    assert by_check_and_window(result) == {
        (n, RANGE[1].key): True
        for n in ("reconciles_with_journal", "no_conflicting_duplicates", "rejects_within_budget")
    }
    result = _checks_alone(database_url, journal)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 3
    for failure in failures:
        error = failure.step_failure_data.error
        assert error is not None and "execute it for a partition" in error.message
        assert "CheckError" not in error.message


def _reconcile_alone(database_url: str, journal: Path) -> dg.AssetCheckEvaluation:
    """reconciles_with_journal executed alone for the window (nothing is recorded again)."""
    result = _checks_alone(database_url, journal, tags={"dagster/partition": KEY})
    assert not result.get_asset_materialization_events()
    return evaluations(result)[RECONCILES]


def _recorded_window(database_url: str, journal: Path) -> None:
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0), fill(2, T0 + 1), fill(3, T0 + 2)])
    materialize(database_url, journal)
    untouched = _reconcile_alone(database_url, journal)
    assert untouched.passed
    assert untouched.metadata["compared_by"].value == "digest"  # nothing was parsed again
    assert untouched.metadata["stored_rows"].value == 6


def test_the_check_finds_a_deleted_row(database_url: str, journal: Path) -> None:
    _recorded_window(database_url, journal)
    execute(
        database_url, "DELETE FROM competition_fill_events WHERE trade_id = 2 AND role = 'maker'"
    )
    check = _reconcile_alone(database_url, journal)
    assert not check.passed and check.metadata["compared_by"].value == "rows"
    assert (check.metadata["missing"].value, check.metadata["unexpected"].value) == (1, 0)
    assert check.metadata["missing_sample"].value.startswith("[(2, ")


def test_the_check_finds_an_extra_row(database_url: str, journal: Path) -> None:
    _recorded_window(database_url, journal)
    execute(
        database_url,
        "INSERT INTO competition_fill_events SELECT 99, wallet, role, side, counterparty,"
        " is_self_trade, symbol, price, size, notional, fee, realized_pnl,"
        " builder_code_address, builder_code_fee, source_type, taker_order_id,"
        " maker_order_id, underlying_notional, fill_ts, window_start, recorded_at"
        " FROM competition_fill_events WHERE trade_id = 1 AND role = 'taker'",
    )
    check = _reconcile_alone(database_url, journal)
    assert not check.passed
    assert (check.metadata["missing"].value, check.metadata["unexpected"].value) == (0, 1)
    assert check.metadata["unexpected_sample"].value.startswith("[(99, ")


def test_the_check_finds_a_changed_price(database_url: str, journal: Path) -> None:
    _recorded_window(database_url, journal)
    execute(
        database_url,
        "UPDATE competition_fill_events SET price = price + 0.001"
        " WHERE trade_id = 3 AND role = 'taker'",
    )
    check = _reconcile_alone(database_url, journal)
    assert not check.passed
    assert (check.metadata["missing"].value, check.metadata["unexpected"].value) == (0, 0)
    assert check.metadata["changed"].value == 1
    assert check.metadata["changed_sample"].value.startswith("[(3, ")


def test_the_check_finds_a_missing_window(database_url: str, journal: Path) -> None:
    _recorded_window(database_url, journal)
    execute(database_url, "DELETE FROM competition_fill_events")
    check = _reconcile_alone(database_url, journal)
    assert not check.passed
    assert (check.metadata["missing"].value, check.metadata["stored_rows"].value) == (6, 0)


def test_the_reconciliation_finds_totals_that_are_not_the_rows_and_the_recount_mends_them(
    database_url: str, journal: Path, monkeypatch
) -> None:
    """The standings read each window's per-wallet totals: a window whose totals are not its
    rows' sums (changed by hand) fails the reconciliation, saying which wallets, what differs
    and what to run; ``competition recount-totals`` makes them the rows' again."""
    from competition_pipeline.tools import cli

    _recorded_window(database_url, journal)
    execute(
        database_url,
        "UPDATE competition_fill_window_totals SET trades = trades + 1, volume = volume - 0.5"
        " WHERE wallet = %s",
        W1.lower(),
    )
    check = _reconcile_alone(database_url, journal)
    assert not check.passed
    assert check.metadata["missing"].value == 0 and check.metadata["unexpected"].value == 0
    assert check.metadata["totals_mismatched_wallets"].value == 1
    sample = check.metadata["totals_mismatch_sample"].value
    assert sample.startswith(f"{W1.lower()}: trades 4 -> 3, volume ")
    assert "fees" not in sample  # only what differs
    assert "competition-pipeline competition recount-totals 2026-11-20-03:00" in (
        check.description or ""
    )
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    assert cli.main(["competition", "recount-totals", KEY]) == 0
    mended = _reconcile_alone(database_url, journal)
    assert mended.passed and mended.metadata["totals_mismatched_wallets"].value == 0
