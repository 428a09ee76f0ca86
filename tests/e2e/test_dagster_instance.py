"""The product as Dagster runs it: the project's dagster.yaml on PostgreSQL, and the dagster CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from competition_pipeline.definitions import defs
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.checks import BLOCKING
from competition_pipeline.store import dburl
from tests.helpers.environment import REPO
from tests.helpers.journal import fill, write_segment
from tests.helpers.sql import scalar

KEY = "2026-11-20-03:00"
WINDOW = Window.from_key(KEY)
DAGSTER = str(Path(sys.executable).with_name("dagster"))
# Dagster's own CLI, as an operator would type it.
MATERIALIZE_WINDOW = [
    *(DAGSTER, "asset", "materialize", "-m", "competition_pipeline.definitions"),
    *("--select", "competition_fill_events", "--partition", KEY),
]


def test_instance_storage_accepts_a_bare_postgresql_url(
    dagster_home: Path, instance_url: str, database_url: str, journal: Path, monkeypatch
) -> None:
    # A bare postgresql:// URL is what breaks dagster-postgres under SQLAlchemy 2.1 (psycopg 3).
    bare = dburl.parse(instance_url).set(drivername="postgresql").render_as_string(False)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", bare)
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    monkeypatch.setenv("FILL_JOURNAL_DIR", str(journal))
    write_segment(journal, WINDOW, "seg.jsonl", [fill(1, WINDOW.start_ms)])
    with dg.DagsterInstance.get() as instance:
        inst_data = instance.run_storage.inst_data
        assert inst_data is not None
        assert inst_data.module_name == "competition_pipeline.instance_storage"
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, partition_key=KEY)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.tags["dagster/partition"] == KEY
        event = instance.get_latest_materialization_event(dg.AssetKey("competition_fill_events"))
        assert event is not None and event.asset_materialization.partition == KEY
        assert event.asset_materialization.metadata["rows_inserted"].value == 2
    # The runs live in PostgreSQL, in the instance database.
    with psycopg.connect(dburl.libpq(instance_url)) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_events") == 2


def _cli_env(database_url: str, journal: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_POSTGRES_URL=os.environ["DAGSTER_POSTGRES_URL"],
        COMPETITION_DATABASE_URL=database_url,
        FILL_JOURNAL_DIR=str(journal),
    )
    return env


@pytest.mark.slow
def test_dagster_cli_materializes_a_partition(
    dagster_home: Path, database_url: str, journal: Path
) -> None:
    write_segment(
        journal, WINDOW, "seg.jsonl.gz", [fill(1, WINDOW.start_ms), fill(2, WINDOW.start_ms)]
    )
    command = MATERIALIZE_WINDOW
    env = _cli_env(database_url, journal, dagster_home)
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_events") == 4
    # Again through the CLI: idempotent.
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert scalar(database_url, "SELECT count(*) FROM competition_fill_events") == 4


@pytest.mark.slow
def test_dagster_cli_reports_an_unreachable_database_without_the_password(
    dagster_home: Path, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg.jsonl", [fill(1, WINDOW.start_ms)])
    url = "postgresql+psycopg://recorder:Pa55-w0rd-x@127.0.0.1:1/competition"
    command = MATERIALIZE_WINDOW
    env = _cli_env(url, journal, dagster_home)
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "STEP_FAILURE" in output and "cannot connect to" in output
    assert f"window {KEY}" in output
    assert "Pa55-w0rd-x" not in output


@pytest.mark.slow
def test_code_location_loads_without_any_environment(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COMPETITION_DATABASE_URL", "FILL_JOURNAL_DIR", "DAGSTER_HOME")
    }
    done = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "competition_pipeline.definitions"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_dagster_cli_partition_range_evaluates_every_check_per_window(
    dagster_home: Path, database_url: str, journal: Path
) -> None:
    windows = [Window(WINDOW.start + i * HOUR) for i in range(3)]
    for i, window in enumerate(windows):
        write_segment(journal, window, "seg.jsonl", [fill(10 + i, window.start_ms)])
    command = [
        *MATERIALIZE_WINDOW[:-2],
        "--partition-range",
        f"{windows[0].key}...{windows[-1].key}",
    ]
    env = _cli_env(database_url, journal, dagster_home)
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        for name in BLOCKING:
            key = dg.AssetCheckKey(dg.AssetKey("competition_fill_events"), name)
            records = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
            assert sorted((r.partition, r.status.value) for r in records) == [
                (w.key, "SUCCEEDED") for w in windows
            ], name
