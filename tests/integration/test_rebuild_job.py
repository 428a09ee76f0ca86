"""``competition_fill_rebuild_job`` run by Dagster on a real instance: an apply without a reason is
refused by Dagster's config validation before a run exists; a blank reason and the open hour fail
the run before anything is read, with a message that says what to do; such failures are not
recording failures (no alert, no ``competition_fill_record_failures_total``), while a failed
recording still is; the op hands nothing to an I/O manager."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs.instance_metrics import read_instance_metrics
from competition_pipeline.defs.rebuild import build_rebuild_job
from competition_pipeline.defs.resources import CompetitionDatabase, FillSourceResource
from competition_pipeline.fills.windows import Window
from tests.helpers.journal import KEY, T0, WINDOW, fill, write_segment
from tests.helpers.location import SETTINGS, build_alerts_sensor
from tests.helpers.rebuild import snapshot
from tests.helpers.runs import materialize
from tests.helpers.webhook import Webhook

DOWN = "postgresql://recorder:hunter2-secret@127.0.0.1:1/competition"
JOB = build_rebuild_job(SETTINGS)


def apply(reason: str | None) -> dict:
    mode = {"apply": {} if reason is None else {"reason": reason}}
    return {"ops": {"rebuild_fill_windows": {"config": {"mode": mode}}}}


def resources(database_url: str, journal: Path) -> dict:
    database = CompetitionDatabase(url=database_url)
    return {
        "database": database,
        "owner_database": database,
        "fill_source": FillSourceResource(root=str(journal)),
    }


def rebuild(database_url: str, journal: Path, key: str, run_config: dict, instance, job=JOB):
    return job.execute_in_process(
        run_config=run_config,
        partition_key=key,
        resources=resources(database_url, journal),
        instance=instance,
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.error.message


def alerts_tick(instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    """Two ticks of the alerts sensor (one collects into its outbox, the next delivers): its
    cursor."""
    sensor = build_alerts_sensor(replace(SETTINGS, alert_backoff_seconds=0.0))
    for _ in range(2):
        cursor = sensor(dg.build_sensor_context(instance=instance, cursor=cursor)).cursor
    return cursor


def test_an_apply_without_a_reason_is_refused_at_launch_and_no_run_exists(
    database_url: str, journal: Path, dagster_home: Path
) -> None:
    instance = dg.DagsterInstance.get()
    with pytest.raises(
        dg.DagsterInvalidConfigError, match='Missing required config entry "reason"'
    ):
        rebuild(database_url, journal, KEY, apply(None), instance)
    # The old shape (apply: true with a reason beside it) is refused too, naming the new one.
    old = {"ops": {"rebuild_fill_windows": {"config": {"apply": True, "reason": "x"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="Expected: \"\\['mode'\\]"):
        rebuild(database_url, journal, KEY, old, instance)
    assert instance.get_runs_count() == 0


def test_failed_rebuilds_are_no_recording_failures_and_a_failed_recording_is(
    database_url: str, journal: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Webhook(refuse=0)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
    instance = dg.DagsterInstance.get()
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0 + 1)])
    assert materialize(database_url, journal, KEY, instance=instance).success
    cursor = alerts_tick(instance, None)  # the first tick sets the watermarks
    before = snapshot(database_url)

    # A blank reason: the run fails before anything is read, saying why in words.
    blank = rebuild(database_url, journal, KEY, apply("  "), instance)
    assert not blank.success
    assert "mode apply needs a reason" in failure_message(blank)
    assert "--reason" not in failure_message(blank)
    # The database down: the apply fails (a StoreError), nothing written either.
    down = rebuild(DOWN, journal, KEY, apply("fee fix"), instance)
    assert not down.success and "not rebuilt (nothing of it written)" in failure_message(down)
    assert snapshot(database_url) == before

    try:
        cursor = alerts_tick(instance, cursor)
        assert hook.received == []
        assert read_instance_metrics(instance).record_failures == 0
        # A failed recording of a window is one (the control: the rule sees recording runs).
        assert not materialize(DOWN, journal, KEY, instance=instance, raise_on_error=False).success
        alerts_tick(instance, cursor)
        assert [(a["event"], a["windows"]) for a in hook.received] == [
            ("competition_run_failed", [KEY])
        ]
        assert read_instance_metrics(instance).record_failures == 1
    finally:
        hook.server.shutdown()


def test_the_open_hour_is_refused_dry_run_and_apply_alike(
    database_url: str, journal: Path, dagster_home: Path
) -> None:
    instance = dg.DagsterInstance.get()
    now = dt.datetime.now(dt.UTC)
    settings = replace(SETTINGS, partitions_start=f"{now - dt.timedelta(days=2):%Y-%m-%d-%H:00}")
    job = build_rebuild_job(settings)
    open_hour = Window.containing(now)
    write_segment(journal, open_hour, "s.jsonl", [fill(1, open_hour.start_ms)])
    before = snapshot(database_url)
    for run_config in ({}, apply("fee fix")):
        result = rebuild(database_url, journal, open_hour.key, run_config, instance, job=job)
        assert not result.success
        message = failure_message(result)
        assert f"window {open_hour.key} is still open" in message
        assert "rebuild it after that (nothing was rebuilt)" in message
    assert snapshot(database_url) == before


def test_a_dry_run_reports_its_diff_as_output_metadata_and_stores_no_output(
    database_url: str, journal: Path, dagster_home: Path
) -> None:
    instance = dg.DagsterInstance.get()
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, T0 + 1)])
    assert materialize(database_url, journal, KEY, instance=instance).success
    result = rebuild(database_url, journal, KEY, {}, instance)
    assert result.success
    types = [event.event_type_value for event in result.all_events]
    assert "STEP_OUTPUT" in types
    assert "HANDLED_OUTPUT" not in types  # no I/O manager pickled anything
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["applied"].value is False and metadata["windows_changed"].value == 0
