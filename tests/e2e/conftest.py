"""The end-to-end tier's fixtures: ``dagster dev`` (webserver and daemon as processes) on the
test's databases and journal. End-to-end tests start Dagster's processes (or the local start)
and talk to them as a user or an operator would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from competition_pipeline.store.database import CompetitionStore
from tests.helpers.dagster_dev import DagsterDev, dagster_dev_env, run_dagster_dev


@pytest.fixture
def dagster_dev(
    dagster_home: Path, database_url: str, journal: Path, tmp_path: Path, request
) -> Iterator[DagsterDev]:
    """``dagster dev`` on the test's databases and journal; the journal sensor runs unless the
    test is marked ``sensor_off`` (a backfill test must not race the sensor for its windows)."""
    CompetitionStore(database_url).ensure_schema()  # the deploy step `competition-pipeline schema`
    sensor_running = request.node.get_closest_marker("sensor_off") is None
    env = dagster_dev_env(database_url, journal, sensor_running=sensor_running)
    with run_dagster_dev(env, tmp_path / "dagster-dev.log") as dev:
        yield dev
