"""The competition database fails over and nothing is lost: a real primary and a streaming
standby of the test's own (competition_harness/replication.py), the URL naming both with
``target_session_attrs=read-write``, Dagster exercised in process (materialize, sensor
evaluation) on a real instance.

* A lossy failover (replication cut, loads committed on the primary only, the primary killed,
  the standby promoted): the windows whose loads vanished are asked for again by the sensor
  though Dagster holds SUCCESS runs for them; once recorded the table is the journal exactly and
  the standings equal a control database's that never failed over.
* A switchover while a load is in flight, with Dagster's instance storage on the same cluster,
  and back again: the attempt cut short fails as transient, the retry reconnects to the new
  primary through the URL's hosts, every run ends SUCCESS, none is left STARTED or QUEUED.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from competition_harness.keys import journal_keys, stored_keys
from competition_harness.replication import ReplicatedPair
from competition_pipeline.defs.live_hour import build_live_hour_job
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.defs.standings import competition_standings
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store.counters import SQL_COUNTERS
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.store.standings import Competitions
from tests.helpers.environment import REPO
from tests.helpers.failover import Recording
from tests.helpers.follower import open_window, wait_until, writing
from tests.helpers.journal import W1, W2, append, bulk_segment, fill, write_segment
from tests.helpers.location import SETTINGS

NOW = Window.containing(dt.datetime.now(dt.UTC))
EARLY, LATE = Window(NOW.start - 3 * HOUR), Window(NOW.start - 2 * HOUR)
#: Retries slow enough to outlast a promotion (1 s, then 2 s, 4 s: exponential).
PATIENT = replace(
    SETTINGS, retry_max=3, retry_delay_seconds=1.0, retry_backoff_seconds=0.0,
    retry_backoff_max_seconds=0.0,
)  # fmt: skip
recording = Recording(PATIENT)
record, tick = recording.record, recording.behind


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    """Under a directory of its own in /tmp: pytest's base temp is private to root (0700, reset
    by every pytest session), and the clusters run as ``postgres``."""
    workdir = Path(tempfile.mkdtemp(prefix="competition-failover-"))
    pair = ReplicatedPair(workdir)
    try:
        pair.start()
        yield pair
    finally:
        pair.close()
        shutil.rmtree(workdir, ignore_errors=True)


def refresh_standings(url: str, instance: dg.DagsterInstance) -> None:
    result = dg.materialize(
        [competition_standings],
        instance=instance,
        resources={"database": CompetitionDatabase(url=url)},
    )
    assert result.success


def standings(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT wallet, rank, pnl, volume, trades, fees FROM competition_standings"
            " WHERE competition_id = 'cup' ORDER BY wallet"
        ).fetchall()


def rows_counter(url: str) -> int:
    """``competition_fill_rows_total`` as the exporter computes it (store/counters.py)."""
    with psycopg.connect(url) as conn:
        counters = {(m, label): v for m, label, v in conn.execute(SQL_COUNTERS)}
    return counters[("rows", "")]


def open_cup(url: str) -> None:
    competitions = Competitions(CompetitionDatabase(url=url).store())
    competitions.create("cup", "Cup", EARLY.start, LATE.end, "pnl")
    for wallet in (W1, W2):
        competitions.register("cup", wallet)


def test_a_lossy_failover_converges_with_no_manual_step(
    pair: ReplicatedPair, journal: Path, database_url: str, instance: dg.DagsterInstance
) -> None:
    url = pair.url("competition")
    open_cup(url)
    write_segment(journal, EARLY, "seg-1.jsonl", [fill(i, EARLY.start_ms + i) for i in range(5)])
    assert record(url, journal, EARLY.key, instance).success
    refresh_standings(url, instance)
    pair.wait_caught_up()
    pair.cut()
    # Committed on the primary only: a late segment of EARLY, all of LATE, their standings.
    write_segment(journal, EARLY, "seg-2.jsonl", [fill(i, EARLY.start_ms + i) for i in (7, 8)])
    write_segment(journal, LATE, "seg-1.jsonl", [fill(i, LATE.start_ms + i) for i in (20, 21)])
    for window in (EARLY, LATE):
        assert record(url, journal, window.key, instance).success
    refresh_standings(url, instance)
    expected = journal_keys(journal)
    assert stored_keys(url) == expected
    before = rows_counter(url)
    pair.failover(lossy=True)

    # The new primary has the older commit of EARLY and nothing of LATE; Dagster says SUCCESS.
    lost = expected - stored_keys(url)
    assert len(lost) == 2 * 4  # fills 7, 8, 20, 21; two wallet rows each
    for window in (EARLY, LATE):
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": window.key}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert tick(url, journal, instance) == sorted([EARLY.key, LATE.key])
    # The lifetime counter is the tables' sum: it falls by what was lost (Prometheus reads a
    # reset; docs/operations.md says what to alert on) ...
    assert rows_counter(url) == before - len(lost)

    # What the daemon does with the requests: the runs, then the standings sensor's refresh.
    for window in (EARLY, LATE):
        assert record(url, journal, window.key, instance).success
    refresh_standings(url, instance)
    stored = stored_keys(url)
    assert (len(expected - stored), len(stored - expected)) == (0, 0)
    with psycopg.connect(url) as conn:  # nothing twice: one row a (trade, wallet)
        (rows,) = conn.execute("SELECT count(*) FROM competition_fill_events").fetchone()
    assert rows == len(expected)
    assert tick(url, journal, instance) == []
    assert rows_counter(url) == before  # ... and comes back to the same total, nothing twice
    # The standings equal a control database's that recorded the same journal once.
    open_cup(database_url)
    for window in (EARLY, LATE):
        assert record(database_url, journal, window.key, instance).success
    refresh_standings(database_url, instance)
    assert standings(url) == standings(database_url) and len(standings(url)) == 2


def wait_for_copy(node_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(node_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'competition-pipeline'"
                " AND query LIKE 'COPY%%stage_%%'"
            ).fetchone()
            if row:
                return
            time.sleep(0.02)
    raise AssertionError("the load never reached COPY")


def test_a_switchover_mid_load_and_back_with_the_instance_on_the_same_cluster(
    pair: ReplicatedPair, journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", pair.url("dagster"))
    url = pair.url("competition")
    CompetitionStore(url).ensure_schema()
    fills = 100_000
    bulk_segment(journal, EARLY, fills)
    write_segment(
        journal, LATE, "seg-1.jsonl", [fill(900_000 + i, LATE.start_ms + i) for i in range(3)]
    )
    with dg.DagsterInstance.get() as instance:
        outcome: dict[str, dg.ExecuteInProcessResult] = {}
        runner = threading.Thread(
            target=lambda: outcome.setdefault("result", record(url, journal, EARLY.key, instance))
        )
        runner.start()
        first_primary = pair.primary
        wait_for_copy(first_primary.url("competition"))
        pair.switchover()  # the load's connection ends with the old primary's fast shutdown
        runner.join(timeout=300)
        result = outcome["result"]
        events = result.all_events
        retried = [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        # Transient, retried: the fast shutdown ends the load's session (57P01, AdminShutdown) or
        # its connection closes under it (OperationalError), whichever reaches the COPY first.
        assert retried
        why = str(retried[0].event_specific_data)
        assert "AdminShutdown" in why or "OperationalError" in why, why
        assert result.success
        # And back: the old primary, re-joined as a standby, promoted again.
        pair.switchover()
        assert pair.primary is first_primary
        assert record(url, journal, LATE.key, instance).success
        expected = journal_keys(journal)
        assert stored_keys(url) == expected and len(expected) == 2 * fills + 2 * 3
        statuses = [r.status for r in instance.get_runs()]
        assert statuses == [dg.DagsterRunStatus.SUCCESS] * 2
        assert tick(url, journal, instance) == []


def test_the_open_hours_follower_resumes_across_a_switchover_and_back(
    pair: ReplicatedPair, journal: Path
) -> None:
    """Fills arrive while the follower loads every 0.2 s; the database switches over and back.
    Each switchover fails an attempt (transient); the retry resumes from the committed offsets
    on the new primary; the run ends SUCCESS and the table is the journal exactly."""
    window = open_window()
    url = pair.url("competition")
    CompetitionStore(url).ensure_schema()
    segment = write_segment(journal, window, "live.jsonl", [fill(1, window.start_ms + 1)])
    trade_ids = itertools.count(2)

    def arrive() -> None:
        n = next(trade_ids)
        append(segment, json.dumps(fill(n, window.start_ms + n)) + "\n")

    lateness = time.time() + 30 - window.end.timestamp()  # the follower ends 30 s from now
    settings = replace(
        PATIENT,
        follow_lateness_seconds=lateness,
        follow_interval_seconds=0.2,
        follow_standings_seconds=0.5,
    )
    outcome: dict[str, dg.ExecuteInProcessResult] = {}

    def follow() -> None:
        outcome["result"] = build_live_hour_job(settings).execute_in_process(
            partition_key=window.key,
            raise_on_error=False,
            resources={
                "database": CompetitionDatabase(url=url),
                "fill_source": FillSourceResource(root=str(journal)),
                "policy": RecordingPolicy(),
            },
        )

    runner = threading.Thread(target=follow)
    with writing(arrive, every=0.05):
        runner.start()
        wait_until(lambda: len(stored_keys(url)) > 20)
        before = len(stored_keys(url))
        pair.switchover()
        wait_until(lambda: len(stored_keys(url)) > before + 20)  # resumed on the new primary
        pair.switchover()  # and back
        time.sleep(2)
    runner.join(timeout=180)
    result = outcome["result"]
    assert result.success
    restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert 1 <= len(restarts) <= 2  # one attempt cut short by each switchover, at most
    expected = journal_keys(journal)
    stored = stored_keys(url)
    assert (len(expected - stored), len(stored - expected)) == (0, 0)
