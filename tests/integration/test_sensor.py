"""``fill_journal_sensor`` evaluated by Dagster on a real instance with PostgreSQL storage, against
a real competition database: every window the journal holds beyond what is committed is
requested, whatever happened to earlier runs, until the table has it."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs.follow import build_follow_sensors
from competition_pipeline.defs.live_hour import LIVE_HOUR_JOB
from competition_pipeline.defs.resources import CompetitionDatabase, FillSourceResource
from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.fill_events import record_window
from competition_pipeline.recording.follow import FOLLOW_TAG
from tests.helpers.journal import append, fill, write_segment
from tests.helpers.location import SETTINGS, fill_journal_sensor

NOW = Window.containing(dt.datetime.now(dt.UTC))
OPEN = NOW  # the hour in progress
RECENT = Window(NOW.start - 3 * HOUR)
OLD = Window(NOW.start - 200 * HOUR)


class Follow:
    """The settings the sensor under test is built from: no backoff unless a test sets one, so
    each tick decides from the committed state alone."""

    settings = replace(SETTINGS, retry_backoff_seconds=0.0, retry_backoff_max_seconds=0.0)


def tick(instance, journal: Path, database_url: str, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "fill_source": FillSourceResource(root=str(journal)),
            "database": CompetitionDatabase(url=database_url),
        },
    )
    fill_journal_sensor, _ = build_follow_sensors(Follow.settings)
    result = fill_journal_sensor(context)
    assert isinstance(result, dg.SensorResult), result
    return result


def keys(result: dg.SensorResult) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests or [])


def commit(journal: Path, database_url: str, window: Window) -> None:
    """What a successful run does: record the window (the pipeline, without Dagster)."""
    record_window(JournalSource(journal), CompetitionDatabase(url=database_url).store(), window)


def add_run(instance, window: Window, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name="competition_fill_events_job",
        run_id=str(uuid.uuid4()),
        status=status,
        tags={"dagster/partition": window.key},
    )
    instance.add_run(run)
    return run


def test_every_window_behind_is_requested_until_it_is_committed(
    instance, journal: Path, database_url: str
) -> None:
    write_segment(journal, OLD, "seg-1.jsonl", [fill(1, OLD.start_ms)])
    live = write_segment(journal, RECENT, "seg-1.jsonl", [fill(2, RECENT.start_ms)])
    write_segment(journal, OPEN, "seg-1.jsonl", [fill(3, OPEN.start_ms)])
    first = tick(instance, journal, database_url, None)
    assert keys(first) == sorted([OLD.key, RECENT.key, OPEN.key])
    assert first.run_requests[0].partition_key == OPEN.key  # the hour in progress first
    assert all(r.run_key is None for r in first.run_requests)  # nothing can suppress a request
    assert first.run_requests[0].tags["competition/behind"] == "never recorded"
    # No run committed anything: every window is asked for again (here without backoff).
    assert keys(tick(instance, journal, database_url, first.cursor)) == keys(first)
    for window in (OLD, RECENT, OPEN):
        commit(journal, database_url, window)
    settled = tick(instance, journal, database_url, first.cursor)
    assert keys(settled) == []
    # A plain segment grows, a late fill lands in an old hour: exactly those windows.
    append(live, json.dumps(fill(4, RECENT.start_ms + 5)) + "\n")
    write_segment(journal, OLD, "seg-2.jsonl", [fill(5, OLD.start_ms + 9)])
    grown = tick(instance, journal, database_url, settled.cursor)
    assert keys(grown) == sorted([OLD.key, RECENT.key])
    reasons = {r.partition_key: r.tags["competition/behind"] for r in grown.run_requests}
    assert reasons[RECENT.key].startswith("grown segment")
    assert reasons[OLD.key].startswith("new segment")
    # The cursor lost: the committed state alone decides, the same windows again.
    assert keys(tick(instance, journal, database_url, None)) == keys(grown)


@pytest.mark.parametrize(
    "status", [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED], ids=str
)
def test_a_window_whose_run_failed_or_was_cancelled_is_requested_again(
    instance, journal: Path, database_url: str, status: dg.DagsterRunStatus
) -> None:
    write_segment(journal, RECENT, "seg-1.jsonl", [fill(1, RECENT.start_ms)])
    first = tick(instance, journal, database_url, None)
    assert keys(first) == [RECENT.key]
    add_run(instance, RECENT, status)
    again = tick(instance, journal, database_url, first.cursor)
    assert keys(again) == [RECENT.key]
    assert again.run_requests[0].tags["competition/attempt"] == "2"


def test_a_started_run_with_no_worker_is_marked_failed_and_its_window_requested(
    instance, journal: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STARTED, no process holds its liveness lock, no event for DEAD_RUN_SECONDS: dead. A
    started run whose worker holds the lock is alive, and its window is left to it."""
    monkeypatch.setattr(Follow, "settings", replace(Follow.settings, dead_run_seconds=0.5))
    write_segment(journal, RECENT, "seg-1.jsonl", [fill(1, RECENT.start_ms)])
    write_segment(journal, OLD, "seg-1.jsonl", [fill(2, OLD.start_ms)])
    dead = add_run(instance, RECENT, dg.DagsterRunStatus.STARTED)
    alive = add_run(instance, OLD, dg.DagsterRunStatus.STARTED)
    store = CompetitionDatabase(url=database_url).store()
    with store.holding_run_lock(alive.run_id):
        time.sleep(1.0)
        result = tick(instance, journal, database_url, None)
    assert keys(result) == [RECENT.key]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    failure = instance.get_records_for_run(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "run worker lost" in failure.records[0].event_log_entry.dagster_event.message


def test_a_window_with_a_live_run_is_not_requested_twice(
    instance, journal: Path, database_url: str
) -> None:
    write_segment(journal, RECENT, "seg-1.jsonl", [fill(1, RECENT.start_ms)])
    queued = add_run(instance, RECENT, dg.DagsterRunStatus.NOT_STARTED)
    assert keys(tick(instance, journal, database_url, None)) == []
    instance.report_run_failed(queued)
    assert keys(tick(instance, journal, database_url, None)) == [RECENT.key]


def test_a_window_that_keeps_failing_backs_off_and_does_not_hold_up_the_others(
    instance, journal: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = replace(Follow.settings, retry_backoff_seconds=1.0, retry_backoff_max_seconds=60.0)
    monkeypatch.setattr(Follow, "settings", slow)
    bad = write_segment(journal, OLD, "seg-1.jsonl", [fill(1, OLD.start_ms)]).with_suffix(".gz")
    bad.write_bytes(b"not gzip")  # OLD's runs fail (a corrupt closed segment)
    write_segment(journal, OPEN, "live.jsonl", [fill(2, OPEN.start_ms)])
    first = tick(instance, journal, database_url, None)
    assert keys(first) == sorted([OLD.key, OPEN.key])
    commit(journal, database_url, OPEN)  # the open hour's run commits; OLD's fails
    second = tick(instance, journal, database_url, first.cursor)
    assert keys(second) == []  # OLD waits 1 s
    time.sleep(1.1)
    append(
        journal / f"date={OPEN.start:%Y-%m-%d}" / f"hour={OPEN.start:%H}" / "live.jsonl",
        json.dumps(fill(3, OPEN.start_ms + 1)) + "\n",
    )
    third = tick(instance, journal, database_url, second.cursor)
    assert keys(third) == sorted([OLD.key, OPEN.key])  # the open hour never waits for it
    attempts = {r.partition_key: r.tags["competition/attempt"] for r in third.run_requests}
    assert attempts == {OLD.key: "2", OPEN.key: "1"}
    commit(journal, database_url, OPEN)
    fourth = tick(instance, journal, database_url, third.cursor)
    assert keys(fourth) == []  # OLD now waits 2 s
    time.sleep(1.1)
    assert keys(tick(instance, journal, database_url, fourth.cursor)) == []
    time.sleep(1.0)
    fifth = tick(instance, journal, database_url, fourth.cursor)
    assert [(r.partition_key, r.tags["competition/attempt"]) for r in fifth.run_requests] == [
        (OLD.key, "3")
    ]


def test_hours_outside_the_partitions_are_not_requested(
    instance, journal: Path, database_url: str
) -> None:
    future = Window(NOW.start + 5 * HOUR)
    before_start = Window.from_key("2025-06-01-00:00")
    write_segment(journal, future, "s.jsonl", [fill(1, future.start_ms)])
    write_segment(journal, before_start, "s.jsonl", [fill(2, before_start.start_ms)])
    (journal / "README.txt").write_text("not part of the layout")
    assert keys(tick(instance, journal, database_url, None)) == []


def test_an_unreachable_database_decides_nothing_and_says_why(instance, journal: Path) -> None:
    write_segment(journal, RECENT, "seg-1.jsonl", [fill(1, RECENT.start_ms)])
    context = dg.build_sensor_context(
        instance=instance,
        resources={
            "fill_source": FillSourceResource(root=str(journal)),
            "database": CompetitionDatabase(url="postgresql://u:pw-xyz@127.0.0.1:1/competition"),
        },
    )
    result = fill_journal_sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert "cannot connect" in result.skip_message and "pw-xyz" not in result.skip_message


def test_a_window_retention_retired_is_never_requested_again_though_the_journal_holds_it(
    instance, journal: Path, database_url: str
) -> None:
    from competition_pipeline.store import months
    from competition_pipeline.store.database import CompetitionStore

    march = Window.from_key("2026-03-31-23:00")  # a month past any retention counted from now
    segment = write_segment(journal, march, "s.jsonl", [fill(1, march.start_ms)])
    write_segment(journal, RECENT, "s.jsonl", [fill(2, RECENT.start_ms)])
    commit(journal, database_url, march)
    assert keys(tick(instance, journal, database_url, None)) == [RECENT.key]

    assert months.retire(CompetitionStore(database_url), 3).dropped == [
        "competition_fill_events_2026_03"
    ]
    # The journal still holds March (now "never recorded"), and it grows: never requested.
    append(segment, json.dumps(fill(3, march.start_ms + 1)) + "\n")
    cursor = None
    for _ in range(3):
        result = tick(instance, journal, database_url, cursor)
        assert keys(result) == [RECENT.key]
        cursor = result.cursor


def test_the_open_hour_is_requested_once_as_a_follower_and_a_dead_follower_is_replaced(
    instance, journal: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open hour's request carries the follower tag (its run follows the hour until it is
    closed past its lateness), a closed hour's does not; while the follower holds its liveness
    lock the hour is not requested again however far the journal is ahead; once its worker is
    gone (lock released, silent) the run is marked failed and a new follower requested."""
    monkeypatch.setattr(Follow, "settings", replace(Follow.settings, dead_run_seconds=0.5))
    segment = write_segment(journal, OPEN, "seg-1.jsonl", [fill(1, OPEN.start_ms)])
    write_segment(journal, RECENT, "seg-1.jsonl", [fill(2, RECENT.start_ms)])
    first = tick(instance, journal, database_url, None)
    tags = {r.partition_key: r.tags for r in first.run_requests}
    assert tags[OPEN.key][FOLLOW_TAG] == "open-hour"
    assert FOLLOW_TAG not in tags[RECENT.key]
    # The open hour goes to the follower's job (its own pool), a closed hour to the asset's.
    jobs = {r.partition_key: r.job_name for r in first.run_requests}
    assert jobs == {OPEN.key: LIVE_HOUR_JOB, RECENT.key: "competition_fill_events_job"}
    commit(journal, database_url, RECENT)
    # A follower still queued (or not started, starting) is not requested a second time.
    for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING):
        waiting = add_run(instance, OPEN, status)
        assert keys(tick(instance, journal, database_url, first.cursor)) == []
        instance.report_run_canceled(waiting)
    follower = add_run(instance, OPEN, dg.DagsterRunStatus.STARTED)
    store = CompetitionDatabase(url=database_url).store()
    with store.holding_run_lock(follower.run_id):
        time.sleep(1.0)
        append(segment, json.dumps(fill(3, OPEN.start_ms + 1)) + "\n")
        assert keys(tick(instance, journal, database_url, first.cursor)) == []
    time.sleep(1.0)  # its worker is gone: the lock released, nothing logged
    replaced = tick(instance, journal, database_url, first.cursor)
    assert [(r.partition_key, r.tags[FOLLOW_TAG]) for r in replaced.run_requests] == [
        (OPEN.key, "open-hour")
    ]
    assert instance.get_run_by_id(follower.run_id).status == dg.DagsterRunStatus.FAILURE
