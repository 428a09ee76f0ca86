"""The Prometheus exporter, scraped over HTTP after recording a journal whose answers are known."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.tools import metrics
from tests.helpers.dagster_dev import free_port
from tests.helpers.journal import KEY, T0, W3, WINDOW, append, fill, line, write_segment
from tests.helpers.runs import materialize
from tests.helpers.sql import execute, query

WB = Window(WINDOW.start + HOUR)
WC = Window(WINDOW.start + 2 * HOUR)
TB, TC = WB.start_ms, WC.start_ms


def known_journal(journal: Path) -> None:
    """Window A: a closed and a plain segment with a self-trade, a conflict and two rejects;
    window B: two fills. Fills 1, 2, 5, 10, 11; rows 2 + 1 + 2 + 2 + 2 = 9."""
    write_segment(
        journal,
        WINDOW,
        "seg-0001.jsonl.gz",
        [
            fill(1, T0 + 1),
            {"type": "Heartbeat"},
            fill(2, T0 + 2, taker_wallet_address=W3, maker_wallet_address=W3),
            fill(3, T0 + 3, price=1520.5),  # reject: a JSON number
        ],
    )
    write_segment(
        journal,
        WINDOW,
        "seg-0002.jsonl",
        [fill(1, T0 + 1, price="1600"), "not json", fill(5, T0 + 5)],  # conflict, reject, fill
    )
    write_segment(journal, WB, "b.jsonl", [fill(10, TB + 10), fill(11, TB + 20)])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return metrics.samples(response.read().decode())


@pytest.fixture
def exporter(database_url: str, journal: Path, dagster_home: Path, monkeypatch) -> int:
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    monkeypatch.setenv("FILL_JOURNAL_DIR", str(journal))
    port = free_port()
    server, _ = metrics.serve("127.0.0.1", port)
    yield port
    server.shutdown()


def test_counters_equal_the_tables_and_lag_follows_the_journal(
    database_url: str, journal: Path, dagster_home: Path, exporter: int
) -> None:
    known_journal(journal)
    instance = dg.DagsterInstance.get()
    for key in (KEY, WB.key):
        assert materialize(database_url, journal, key, instance=instance).success
    bad = "postgresql://recorder:secret@127.0.0.1:1/competition"
    assert not materialize(bad, journal, WC.key, instance=instance, raise_on_error=False).success

    before = time.time()
    got = scrape(exporter)
    after = time.time()
    (fills, rows), (conflicts,) = (
        query(
            database_url, "SELECT count(DISTINCT trade_id), count(*) FROM competition_fill_events"
        )[0],
        query(database_url, "SELECT count(*) FROM competition_fill_conflicts")[0],
    )
    assert (fills, rows, conflicts) == (5, 9, 2)  # the known answer (a conflict: both wallets)
    assert got["competition_fills_recorded_total"] == fills
    assert got["competition_fill_rows_total"] == rows
    assert got["competition_fill_conflicts_total"] == conflicts
    rejects = {k: v for k, v in got.items() if k.startswith("competition_fill_rejects_total")}
    assert (
        sum(rejects.values())
        == 2
        == query(database_url, "SELECT count(*) FROM competition_fill_rejects")[0][0]
    )
    assert 'competition_fill_rejects_total{reason="invalid JSON"}' in rejects
    failed = len(instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])))
    assert failed == 1
    assert got["competition_fill_record_failures_total"] == failed
    assert got['competition_dagster_runs{status="SUCCESS"}'] == 2
    assert got['competition_dagster_runs{status="FAILURE"}'] == 1
    assert got["competition_fill_windows_behind"] == 0
    assert got["competition_fill_behind_seconds"] == 0
    assert got["competition_fill_lag_seconds"] == 0
    newest = (TB + 20) / 1000
    assert before - newest <= got["competition_fill_staleness_seconds"] <= after - newest

    # The journal grows while nothing records it: a plain segment grows in A, B gets a fill,
    # a new hour C begins. Three windows are behind; the lag is the journal's newest fill minus
    # the newest recorded one.
    append(window_dir(journal, WINDOW) / "seg-0002.jsonl", line(fill(6, T0 + 6)) + "\n")
    append(window_dir(journal, WB) / "b.jsonl", line(fill(12, TB + 30)) + "\n")
    write_segment(journal, WC, "c.jsonl", [fill(20, TC + 500), {"type": "Heartbeat"}])
    ((first_commit,),) = query(
        database_url, "SELECT extract(epoch FROM min(recorded_at)) FROM competition_fill_windows"
    )
    before = time.time()
    got = scrape(exporter)
    after = time.time()
    assert got["competition_fill_windows_behind"] == 3
    # The worst behind window has gone without a commit since A's commit.
    behind = got["competition_fill_behind_seconds"]
    assert before - float(first_commit) <= behind <= after - float(first_commit)
    assert got["competition_fill_lag_seconds"] == pytest.approx((TC + 500 - TB - 20) / 1000)

    # Recording catches up: nothing behind, no lag, and the counters moved with the tables.
    for key in (KEY, WB.key, WC.key):
        assert materialize(database_url, journal, key, instance=instance).success
    got = scrape(exporter)
    assert got["competition_fill_windows_behind"] == 0
    assert got["competition_fill_lag_seconds"] == 0
    ((fills, rows),) = query(
        database_url, "SELECT count(DISTINCT trade_id), count(*) FROM competition_fill_events"
    )
    assert (
        (got["competition_fills_recorded_total"], got["competition_fill_rows_total"])
        == (
            fills,
            rows,
        )
        == (8, 15)
    )


def test_no_counter_falls_when_a_month_is_retired_or_a_rebuild_removes_rows(
    database_url: str, journal: Path, dagster_home: Path, exporter: int, monkeypatch
) -> None:
    from competition_pipeline.fills.journal import JournalSource
    from competition_pipeline.recording.fill_events import record_window
    from competition_pipeline.recording.rebuild import rebuild_windows
    from competition_pipeline.store import months
    from competition_pipeline.store.database import CompetitionStore
    from tests.helpers.rebuild import other_rules, self_trade_as_two_rows

    store = CompetitionStore(database_url)
    march = Window.from_key("2026-03-31-23:00")  # retired below: older than any retention
    write_segment(journal, march, "m.jsonl", [fill(1, march.start_ms), "garbage"])
    known_journal(journal)  # WINDOW (rejects, a conflict) and WB
    # WB recorded by an older rule that gave a self-trade two rows: a rebuild removes one.
    write_segment(
        journal,
        WB,
        "self.jsonl",
        [fill(30, TB + 30, taker_wallet_address=W3, maker_wallet_address=W3)],
    )
    for window in (march, WINDOW):
        record_window(JournalSource(journal), store, window)
    with monkeypatch.context() as patch:
        other_rules(patch, self_trade_as_two_rows)
        record_window(JournalSource(journal), store, WB)

    def counters(scrape_: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in scrape_.items() if "_total" in k}

    first = scrape(exporter)
    assert (
        first["competition_fill_rows_stored"]
        == query(database_url, "SELECT count(*) FROM competition_fill_events")[0][0]
    )
    assert months.retire(store, 3).dropped == ["competition_fill_events_2026_03"]
    second = scrape(exporter)
    assert second["competition_fill_rows_stored"] == first["competition_fill_rows_stored"] - 2
    # March, still in the journal, is retired: not behind (the sensors never ask for it).
    assert second["competition_fill_windows_behind"] == first["competition_fill_windows_behind"]
    report = rebuild_windows(JournalSource(journal), store, [WB], apply=True, reason="self rule")
    assert report.windows[0].removed == 1
    third = scrape(exporter)
    assert third["competition_fill_rows_stored"] == second["competition_fill_rows_stored"] - 1
    for before, after in ((first, second), (second, third)):
        fallen = {k: (v, after.get(k)) for k, v in counters(before).items() if after.get(k, 0) < v}
        assert fallen == {}
    # A restarted (or a second) exporter serves the same totals: nothing is counted in a process.
    server, _ = metrics.serve("127.0.0.1", port := free_port())
    try:
        assert counters(scrape(port)) == counters(third)
    finally:
        server.shutdown()
    assert (
        third['competition_fill_rejects_total{reason="invalid JSON"}']
        == (first['competition_fill_rejects_total{reason="invalid JSON"}'])
    )


def test_reject_labels_come_from_a_closed_set_of_rules(
    database_url: str, journal: Path, dagster_home: Path, exporter: int
) -> None:
    """Issue 33: 50 misfiled lines made 50 series labelled with their timestamps; an old
    release's misfiled reason (already stored) is served as ``misfiled`` too."""
    from competition_pipeline.fills.contract import REJECT_RULES

    write_segment(journal, WINDOW, "seg.jsonl", [fill(i, TB + i) for i in range(1, 51)])
    assert materialize(database_url, journal).success
    old = "timestamp 1772222399951 (2026-02-27T19:59:59.951000Z) is outside the window x"
    execute(
        database_url,
        "INSERT INTO competition_fill_rejects (window_start, source_file, line_no, raw_line,"
        " raw_line_escaped, reason) VALUES (%s, 'old.jsonl', 1, 'x', false, %s),"
        " (%s, 'old.jsonl', 2, 'x', false, 'a rule of the future: y')",
        WINDOW.start,
        old,
        WINDOW.start,
    )
    rejects = {
        k: v for k, v in scrape(exporter).items() if k.startswith("competition_fill_rejects")
    }
    assert rejects == {
        'competition_fill_rejects_total{reason="misfiled"}': 51,
        'competition_fill_rejects_total{reason="other"}': 1,
    }
    assert {k.split('"')[1] for k in rejects} <= {*REJECT_RULES, "other"}


def test_a_scrape_decompresses_a_bounded_amount_of_a_closed_segment(
    database_url: str, journal: Path, dagster_home: Path, exporter: int
) -> None:
    """Every scrape decompressed the newest .gz whole. A segment whose bytes past the scrape's
    bound are corrupt shows it: read whole, the scrape fails; read to the bound, it is served
    (the run that records the window reads it whole and fails on the corruption, as it must)."""
    import gzip as gz

    head = (line(fill(1, T0 + 1)) + "\n").encode() + b"\n" * (metrics.GZ_SCRAPE_BYTES + 1024)
    compressed = gz.compress(head + b"\n" * (4 << 20), mtime=0)
    directory = window_dir(journal, WINDOW)
    directory.mkdir(parents=True)
    # Corrupt the last part of the deflate stream: only a read past the bound reaches it.
    cut = len(compressed) - 64
    (directory / "seg.jsonl.gz").write_bytes(compressed[:cut] + b"\xff" * 64)
    got = scrape(exporter)  # on main: HTTP 500 (the corrupt end was decompressed)
    assert got["competition_fill_windows_behind"] == 1


def test_a_scrape_reads_nothing_through_a_symlinked_hour(
    database_url: str, journal: Path, dagster_home: Path, exporter: int, tmp_path: Path
) -> None:
    """The exporter follows the journal's file rule: an hour directory that is a symbolic link
    to fills elsewhere is neither a window behind nor the newest fill."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "seg.jsonl").write_text(line(fill(1, TC + 1)) + "\n")
    hour = window_dir(journal, WC)
    hour.parent.mkdir(parents=True, exist_ok=True)
    hour.symlink_to(outside, target_is_directory=True)
    got = scrape(exporter)
    assert got["competition_fill_windows_behind"] == 0
    assert "competition_fill_lag_seconds" not in got


def test_every_metric_the_alert_rules_read_is_exported(
    database_url: str, journal: Path, dagster_home: Path, exporter: int
) -> None:
    """The rule file (deploy/prometheus, tested by promtool on series of these names) reads only
    names this exporter serves; ``up`` is Prometheus' own."""
    import re

    import yaml

    from tests.helpers.environment import REPO

    rules = yaml.safe_load((REPO / "deploy/prometheus/competition-pipeline.rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\bcompetition_\w+", expr)}
    assert "competition_fill_freshness_state" in used and len(used) == 6
    known_journal(journal)  # a fill in the journal: the lag is served
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter}/metrics", timeout=30) as response:
        text = response.read().decode()
    served = set(re.findall(r"^# TYPE (\w+) \w+$", text, re.MULTILINE))
    assert used - served == set()
    # Before the daemon evaluated the freshness policy, the state is UNKNOWN, not FAIL.
    got = metrics.samples(text)
    assert got['competition_fill_freshness_state{state="UNKNOWN"}'] == 1
    assert got['competition_fill_freshness_state{state="FAIL"}'] == 0
