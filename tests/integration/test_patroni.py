"""Patroni, the orchestrator users run: a leader killed (``kill -9`` of Patroni and its
postmaster) while a window is being recorded. The replica takes the leader key after the TTL
(10 s) and promotes itself; meanwhile the run's attempts fail as transient (no host accepts
writes) and its retries reach the new leader through the URL's two hosts. The sensor then asks
for whatever the promotion lost, and the table ends equal to the journal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from competition_harness.keys import journal_keys, stored_keys
from competition_pipeline.fills.windows import HOUR, Window
from tests.helpers.environment import require_programs
from tests.helpers.failover import Recording
from tests.helpers.journal import bulk_segment, fill, write_segment
from tests.helpers.location import SETTINGS
from tests.helpers.patroni import ETCD, PATRONI, PatroniCluster

NOW = Window.containing_ms(int(time.time() * 1000))
EARLY, LATE = Window(NOW.start - 3 * HOUR), Window(NOW.start - 2 * HOUR)
#: Retries that outlast Patroni's TTL: 2, 4, 8, 16 s (exponential, with jitter).
PATIENT = replace(
    SETTINGS,
    retry_max=4,
    retry_delay_seconds=2.0,
    retry_backoff_seconds=0.0,
    retry_backoff_max_seconds=0.0,
)
recording = Recording(PATIENT)
record, behind = recording.record, recording.behind


@pytest.fixture
def patroni() -> Iterator[PatroniCluster]:
    require_programs("the Patroni test", PATRONI, ETCD)
    cluster = PatroniCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_patroni_fails_over_mid_load_and_the_table_converges(
    patroni: PatroniCluster, journal: Path, instance: dg.DagsterInstance
) -> None:
    with psycopg.connect(patroni.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE competition")
    url = patroni.url("competition")
    write_segment(journal, EARLY, "seg-1.jsonl", [fill(i, EARLY.start_ms + i) for i in range(5)])
    assert record(url, journal, EARLY.key, instance).success
    bulk_segment(journal, LATE, 100_000, first_trade_id=1_000)
    old = patroni.leader()
    assert old is not None
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault("result", record(url, journal, LATE.key, instance))
    )
    runner.start()
    time.sleep(1.0)  # the load under way
    patroni.kill(old)
    runner.join(timeout=300)
    new = patroni.leader()
    assert new is not None and new is not old
    result = outcome["result"]
    assert result.success
    assert [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    for key in behind(url, journal, instance):  # what the promotion lost, if anything
        assert record(url, journal, key, instance).success
    assert behind(url, journal, instance) == []
    expected = journal_keys(journal)
    stored = stored_keys(url)
    assert (len(expected - stored), len(stored - expected)) == (0, 0)
