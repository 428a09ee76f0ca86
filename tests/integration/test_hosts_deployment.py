"""A run worker elsewhere refuses to record under rules other than the code server's.

The run is created as the service host creates it (its job snapshot, with the fingerprint the
code server stamped on the asset, stored in a real instance on PostgreSQL) and executed as a
Celery worker executes it (``execute_run`` of the stored run with the worker's own definitions):
with the same settings it records, with another ``FILL_PARTITIONS_START`` or another code digest
it fails with the difference named and records nothing. The host that executed it is on the run.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline import deployment
from competition_pipeline.defs.dagster_internals import (
    PARTITION_NAME_TAG,
    InMemoryJob,
    execute_run,
)
from competition_pipeline.defs.fill_events import build_fill_asset
from competition_pipeline.defs.hosts import HOST_TAG
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from tests.helpers.journal import KEY, T0, WINDOW, fill, write_segment
from tests.helpers.location import SETTINGS
from tests.helpers.sql import query


def job(settings, database_url: str, journal: Path) -> dg.JobDefinition:
    definitions = dg.Definitions(
        assets=[build_fill_asset(settings)],
        jobs=[dg.define_asset_job("fill_job", selection="competition_fill_events")],
        executor=dg.in_process_executor,
        resources={
            "database": CompetitionDatabase(url=database_url),
            "fill_source": FillSourceResource(root=str(journal)),
            "policy": RecordingPolicy(),
        },
    )
    return definitions.resolve_job_def("fill_job")


def run_elsewhere(
    planned: dg.JobDefinition, worker: dg.JobDefinition, instance: dg.DagsterInstance
) -> dg.DagsterRun:
    """Create the run from ``planned`` (the code server's), execute it with ``worker``."""
    run = instance.create_run_for_job(
        job_def=planned, tags={PARTITION_NAME_TAG: KEY}, run_config={}
    )
    execute_run(InMemoryJob(worker), run, instance)
    return instance.get_run_by_id(run.run_id)


@pytest.fixture
def instance(dagster_home: Path):
    with dg.DagsterInstance.get() as instance:
        yield instance


def failure(instance: dg.DagsterInstance, run_id: str) -> str:
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        return entry.dagster_event.step_failure_data.error.message
    raise AssertionError("no step failure")


def test_the_same_settings_record_and_name_the_host(
    instance: dg.DagsterInstance, database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(1, T0 + 1)])
    same = job(SETTINGS, database_url, journal)
    run = run_elsewhere(same, job(SETTINGS, database_url, journal), instance)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags[HOST_TAG] == socket.gethostname()
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2,)]


def test_another_partitions_start_fails_the_run_and_records_nothing(
    instance: dg.DagsterInstance, database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(1, T0 + 1)])
    other = replace(SETTINGS, partitions_start="2025-06-01-00:00")
    assert other.partitions_start != SETTINGS.partitions_start
    run = run_elsewhere(
        job(SETTINGS, database_url, journal), job(other, database_url, journal), instance
    )
    assert run.status == dg.DagsterRunStatus.FAILURE
    message = failure(instance, run.run_id)
    assert "refuses to record" in message
    assert f"partitions_start: {SETTINGS.partitions_start} != 2025-06-01-00:00" in message
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(0,)]


def test_other_code_fails_the_run(
    instance: dg.DagsterInstance,
    database_url: str,
    journal: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker on another release: its code digest differs from the one the run was planned
    with (the planned job's tag is computed first, with the real digest)."""
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(1, T0 + 1)])
    planned = job(SETTINGS, database_url, journal)
    monkeypatch.setattr(deployment, "code_digest", lambda: "0123456789abcdef")
    run = run_elsewhere(planned, job(SETTINGS, database_url, journal), instance)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert "code: " in failure(instance, run.run_id)
    assert "0123456789abcdef" in failure(instance, run.run_id)
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(0,)]
