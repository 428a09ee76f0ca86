"""``fill_journal_sensor`` evaluated by Dagster on a real instance with PostgreSQL storage."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.follow import FollowCursor
from competition_pipeline.resources import FillSourceResource
from competition_pipeline.schedules import competition_fill_events_hourly
from competition_pipeline.sensors import fill_journal_sensor
from competition_pipeline.sources.journal import scan
from competition_pipeline.windows import HOUR, Window
from tests.journal_helpers import append, fill, write_segment

NOW = Window.containing(dt.datetime.now(dt.UTC))
OPEN = NOW  # the hour in progress
RECENT = Window(NOW.start - 3 * HOUR)
OLD = Window(NOW.start - 200 * HOUR)  # far outside the sensor's 48-hour horizon


def settle() -> None:
    """Let file times fall out of the sensor's one-second clock slack (see follow.py)."""
    time.sleep(1.1)


@pytest.fixture
def instance(dagster_home: Path):
    with dg.DagsterInstance.get() as instance:
        yield instance


def tick(instance: dg.DagsterInstance, journal: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"journal": FillSourceResource(root=str(journal))},
    )
    result = fill_journal_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def keys(result: dg.SensorResult) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests or [])


def test_sensor_follows_the_journal(instance, journal: Path) -> None:
    # No data: nothing requested, but a cursor is kept.
    first = tick(instance, journal, None)
    assert keys(first) == []
    settle()
    # A new segment: exactly its window, with a run key derived from its data.
    write_segment(journal, OLD, "seg-1.jsonl", [fill(1, OLD.start_ms)])
    live = write_segment(journal, RECENT, "seg-1.jsonl", [fill(2, RECENT.start_ms)])
    second = tick(instance, journal, first.cursor)
    assert keys(second) == sorted([OLD.key, RECENT.key])
    run_keys = {r.partition_key: r.run_key for r in second.run_requests}
    assert run_keys[RECENT.key].startswith(f"{RECENT.key}@")
    # The same state again: nothing.
    settle()
    third = tick(instance, journal, second.cursor)
    assert keys(third) == []
    # The cursor is bounded: the old hour (outside the horizon) is not kept in it.
    stored = json.loads(third.cursor)
    assert OLD.key not in stored["fingerprints"] and RECENT.key in stored["fingerprints"]
    # A plain segment grows: its window again, under a new run key.
    append(live, json.dumps(fill(3, RECENT.start_ms + 5)) + "\n")
    fourth = tick(instance, journal, third.cursor)
    assert keys(fourth) == [RECENT.key]
    assert fourth.run_requests[0].run_key != run_keys[RECENT.key]
    # A late fill filed into the old hour (a new segment): that window again.
    write_segment(journal, OLD, "seg-2.jsonl", [fill(4, OLD.start_ms + 9)])
    fifth = tick(instance, journal, fourth.cursor)
    assert keys(fifth) == [OLD.key]
    # A restart: a fresh context from the stored cursor repeats nothing and misses nothing.
    settle()
    restarted = tick(instance, journal, fifth.cursor)
    assert keys(restarted) == []
    write_segment(journal, OPEN, "seg-1.jsonl", [fill(5, OPEN.start_ms)])
    assert keys(tick(instance, journal, restarted.cursor)) == [OPEN.key]


def test_the_open_hour_is_requested_as_it_grows(instance, journal: Path) -> None:
    segment = write_segment(journal, OPEN, "live.jsonl", [fill(1, OPEN.start_ms)])
    result = tick(instance, journal, None)
    assert keys(result) == [OPEN.key]
    for n in range(2, 4):
        append(segment, json.dumps(fill(n, OPEN.start_ms + n)) + "\n")
        result = tick(instance, journal, result.cursor)
        assert keys(result) == [OPEN.key]
    assert keys(tick(instance, journal, result.cursor)) == []


def test_a_window_with_a_run_in_progress_is_not_requested_again(instance, journal: Path) -> None:
    segment = write_segment(journal, RECENT, "live.jsonl", [fill(1, RECENT.start_ms)])
    first = tick(instance, journal, None)
    assert keys(first) == [RECENT.key]
    run = dg.DagsterRun(
        job_name="competition_fill_events_job",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": RECENT.key},
    )
    instance.add_run(run)
    append(segment, json.dumps(fill(2, RECENT.start_ms + 1)) + "\n")
    deferred = tick(instance, journal, first.cursor)
    assert keys(deferred) == []
    assert json.loads(deferred.cursor)["pending"] == [RECENT.key]
    instance.report_run_failed(run)
    assert keys(tick(instance, journal, deferred.cursor)) == [RECENT.key]


def test_hours_outside_the_partitions_are_not_requested(instance, journal: Path) -> None:
    future = Window(NOW.start + 5 * HOUR)
    before_start = Window.from_key("2025-06-01-00:00")
    write_segment(journal, future, "s.jsonl", [fill(1, future.start_ms)])
    write_segment(journal, before_start, "s.jsonl", [fill(2, before_start.start_ms)])
    (journal / "README.txt").write_text("not part of the layout")
    assert keys(tick(instance, journal, None)) == []


def test_cursor_round_trips() -> None:
    cursor = FollowCursor(123, {"2026-11-20-03:00": "abc"}, ["2026-11-20-04:00"])
    assert FollowCursor.from_json(cursor.to_json()) == cursor
    assert FollowCursor.from_json(None) == FollowCursor()


def test_scan_reports_entries_outside_the_layout(journal: Path) -> None:
    write_segment(journal, RECENT, "seg.jsonl", [fill(1, RECENT.start_ms)])
    (journal / "date=2026-13-45").mkdir()
    (journal / "date=2026-11-20" / "hour=99").mkdir(parents=True)
    (journal / "notes.md").write_text("x")
    states, ignored = scan(journal)
    assert [s.window for s in states] == [RECENT]
    assert "notes.md" in ignored and "date=2026-11-20/hour=99" in ignored
    assert any(name.startswith("date=2026-13-45") for name in ignored)


def test_schedule_requests_the_window_that_just_closed() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 20, 4, 5, tzinfo=dt.UTC)
    )
    request = competition_fill_events_hourly(context)
    assert request.partition_key == "2026-11-20-03:00"
    assert request.run_key == "2026-11-20-03:00"
