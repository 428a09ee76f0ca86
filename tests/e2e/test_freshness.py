"""Freshness under ``dagster dev``: the FreshnessPolicy is on the asset (GraphQL), the asset is
fresh after a recording and turns stale when recording stops, the alerts sensor reports it, and the
metrics exporter shows the sensors' last tick age. Time is driven by a one-minute fail window (the
shortest Dagster allows) and a five-second freshness daemon interval."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs.dagster_internals import InstigatorType
from competition_pipeline.fills.windows import Window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import metrics
from tests.helpers.dagster_dev import dagster_dev_env, free_port, run_dagster_dev, wait_for
from tests.helpers.journal import fill, write_segment
from tests.helpers.runs import materialize
from tests.helpers.webhook import Webhook

pytestmark = pytest.mark.slow

FRESHNESS = """
{
  assetNodes(assetKeys: [{path: ["competition_fill_events"]}]) {
    internalFreshnessPolicy {
      __typename
      ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
    }
    freshnessStatusInfo { freshnessStatus }
  }
}"""


def test_the_asset_turns_stale_when_recording_stops_and_it_is_alerted(
    dagster_home: Path, database_url: str, journal: Path, tmp_path: Path, monkeypatch
) -> None:
    CompetitionStore(database_url).ensure_schema()
    hook = Webhook(refuse=1)  # the first delivery attempt is refused, a later one arrives
    env = {
        **dagster_dev_env(database_url, journal, sensor_running=False),
        "FILL_FRESHNESS_FAIL_MINUTES": "1",
        "FILL_FRESHNESS_WARN_MINUTES": "0",
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
        "ALERT_INTERVAL_SECONDS": "5",
        "ALERT_BACKOFF_SECONDS": "1",
        "ALERT_WEBHOOK_URL": hook.url,
    }
    window = Window.containing_ms(int(time.time() * 1000))
    write_segment(journal, window, "s.jsonl", [fill(1, window.start_ms)])
    try:
        with run_dagster_dev(env, tmp_path / "dagster-dev.log") as dev:

            def status() -> str:
                (node,) = dev.graphql(FRESHNESS)["assetNodes"]
                return node["freshnessStatusInfo"]["freshnessStatus"]

            (node,) = dev.graphql(FRESHNESS)["assetNodes"]
            assert node["internalFreshnessPolicy"] == {
                "__typename": "TimeWindowFreshnessPolicy",
                "failWindowSeconds": 60,
                "warnWindowSeconds": None,
            }
            # Let the alerts sensor take its first tick (its watermarks) before the recording.
            wait_for(lambda: _ticked(dg.DagsterInstance.get()), 120, "an alerts tick", dev)
            instance = dg.DagsterInstance.get()
            assert materialize(database_url, journal, window.key, instance=instance).success
            wait_for(lambda: status() == "HEALTHY", 120, "fresh after a recording", dev)
            # Recording stops (the sensor is off): past the one-minute window it is stale.
            wait_for(lambda: status() == "DEGRADED", 180, "stale after the window", dev)
            wait_for(
                lambda: any(b["event"] == "competition_fill_events_stale" for b in hook.received),
                120,
                "the stale alert at the webhook",
                dev,
            )
            assert hook.requests >= 2  # refused once, delivered after
            assert [b["event"] for b in hook.received] == ["competition_fill_events_stale"]

            monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
            monkeypatch.setenv("FILL_JOURNAL_DIR", str(journal))
            port = free_port()
            server, _ = metrics.serve("127.0.0.1", port)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                    got = metrics.samples(response.read().decode())
            finally:
                server.shutdown()
            age = got['competition_sensor_last_tick_age_seconds{sensor="competition_alerts"}']
            assert 0 <= age < 120
            assert got['competition_sensor_running{sensor="competition_alerts"}'] == 1
            assert got["competition_fill_windows_behind"] == 0
            # The asset stale, as the rule CompetitionFillEventsStale reads it (deploy/prometheus).
            assert got['competition_fill_freshness_state{state="FAIL"}'] == 1
            assert got['competition_fill_freshness_state{state="PASS"}'] == 0
    finally:
        hook.server.shutdown()


def _ticked(instance: dg.DagsterInstance) -> bool:
    return any(
        state.instigator_name == "competition_alerts"
        and getattr(state.instigator_data, "last_tick_timestamp", None)
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    )
