"""Dagster's project CLI, ``dg`` (dagster-dg-cli), on this project as a developer types it in the
repository: ``[tool.dg]`` in pyproject.toml is all it needs to find the code location."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from competition_harness.keys import journal_keys, stored_keys
from competition_pipeline.definitions import defs
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.dagster_dev import (
    dagster_dev_env,
    dg_dev_command,
    run_dagster_dev,
    wait_for,
)
from tests.helpers.environment import REPO
from tests.helpers.journal import fill, write_segment

DG = str(Path(sys.executable).with_name("dg"))


def _dg(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``dg ARGS`` in the repository. Without DAGSTER_HOME dg would read the repository's own
    dagster.yaml (PostgreSQL storage from DAGSTER_POSTGRES_URL); checking and listing need no
    instance, so an empty home."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COMPETITION_"))}
    return subprocess.run(
        [DG, *args],
        cwd=REPO,
        env={**env, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_check_defs_loads_the_code_location(tmp_path: Path) -> None:
    result = _dg("check", "defs", home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_list_defs_lists_what_the_code_location_defines(tmp_path: Path) -> None:
    result = _dg("list", "defs", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    repository = defs.get_repository_def()
    # What dg lists is what Dagster loads from competition_pipeline.definitions ...
    assert {a["asset_key"] for a in listed["assets"]} == {
        key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()
    }
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"{key.asset_key.to_user_string()}:{key.name}"
        for key in repository.asset_graph.asset_check_keys
    }
    assert {j["name"] for j in listed["jobs"]} == {
        job.name for job in repository.get_all_jobs() if not job.name.startswith("__")
    }
    assert {s["name"] for s in listed["sensors"]} == {s.name for s in repository.sensor_defs}
    assert {s["name"] for s in listed["schedules"]} == {s.name for s in repository.schedule_defs}
    # ... and holds the interface names the operators' docs use.
    assert {"competition_fill_events", "competition_standings"} <= {
        a["asset_key"] for a in listed["assets"]
    }
    assert "competition_fill_events:reconciles_with_journal" in {
        c["key"] for c in listed["asset_checks"]
    }
    assert {"competition_fill_retention_job", "competition_fill_rebuild_job"} <= {
        j["name"] for j in listed["jobs"]
    }
    assert {"fill_journal_sensor", "competition_alerts"} <= {s["name"] for s in listed["sensors"]}
    assert {"competition_fill_events_hourly": "5 * * * *"}.items() <= {
        s["name"]: s["cron_schedule"] for s in listed["schedules"]
    }.items()


@pytest.mark.slow
def test_dg_dev_runs_the_product_as_dagster_dev_does(
    dagster_home: Path, database_url: str, journal: Path, tmp_path: Path
) -> None:
    """``dg dev`` instead of ``bin/start``'s ``dagster dev``: the same webserver and daemon on the
    instance of DAGSTER_HOME; the sensor records a window dropped into the journal."""
    CompetitionStore(database_url).ensure_schema()
    window = Window(Window.containing_ms(int(time.time() * 1000)).start - HOUR)
    write_segment(journal, window, "seg-1.jsonl", [fill(1, window.start_ms)])
    expected = journal_keys(journal, [window])
    env = dagster_dev_env(database_url, journal, sensor_running=True)
    with run_dagster_dev(env, tmp_path / "dg-dev.log", command=dg_dev_command) as dev:
        locations = dev.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
        )["workspaceOrError"]["locationEntries"]
        assert [entry["name"] for entry in locations] == ["competition_pipeline"]
        wait_for(lambda: stored_keys(database_url) == expected, 120, "the sensor's run", dev)
