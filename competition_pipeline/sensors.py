"""Sensors: follow the journal durably (``fill_journal_sensor``) and report failed runs.

``fill_journal_sensor`` scans the journal, decides with :func:`competition_pipeline.follow.plan`
and returns its cursor through ``SensorResult``, so the position lives in the instance's PostgreSQL
storage and survives restarts. No pile-up: before deciding, the tick reads the instance's run list
for queued or in-progress runs of the asset (single windows and backfill ranges); a changed window
with such a run is deferred (kept in the cursor's ``pending``) and requested on a later tick, after
that run ends. Run keys ``<window>@<fingerprint>`` make a repeat request of unchanged data a no-op.
"""

import datetime as dt
import json
import os
import time

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, RunsFilter
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from competition_pipeline.assets import competition_fill_events, fill_partitions
from competition_pipeline.follow import DEFAULT_HORIZON_HOURS, FollowCursor, plan
from competition_pipeline.jobs import fill_events_job
from competition_pipeline.resources import FillSourceResource
from competition_pipeline.sources.journal import scan
from competition_pipeline.sources.stream import StreamSource, windows_since
from competition_pipeline.windows import Window, windows_between

SENSOR_INTERVAL_SECONDS = int(os.environ.get("FILL_SENSOR_INTERVAL_SECONDS", "30"))
SENSOR_HORIZON_HOURS = int(os.environ.get("FILL_SENSOR_HORIZON_HOURS", DEFAULT_HORIZON_HOURS))
# Stopped by default in a deployment (turn it on in the UI); `bin/start` sets it to "running".
SENSOR_DEFAULT_STATUS = (
    dg.DefaultSensorStatus.RUNNING
    if os.environ.get("FILL_SENSOR_DEFAULT_STATUS", "stopped").lower() == "running"
    else dg.DefaultSensorStatus.STOPPED
)
_QUEUED_OR_RUNNING = [*IN_PROGRESS_RUN_STATUSES, dg.DagsterRunStatus.QUEUED]


def windows_in_progress(instance: dg.DagsterInstance) -> set[str]:
    """Keys of the windows that a queued or running run of the asset is recording."""
    keys: set[str] = set()
    for record in instance.get_run_records(RunsFilter(statuses=_QUEUED_OR_RUNNING)):
        run = record.dagster_run
        if (
            run.asset_selection is not None
            and competition_fill_events.key not in run.asset_selection
        ):
            continue
        tags = run.tags
        if PARTITION_NAME_TAG in tags:
            keys.add(tags[PARTITION_NAME_TAG])
        elif ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
            first = Window.from_key(tags[ASSET_PARTITION_RANGE_START_TAG])
            last = Window.from_key(tags[ASSET_PARTITION_RANGE_END_TAG])
            keys.update(w.key for w in windows_between(first.start, last.end))
    return keys


def partition_bounds() -> tuple[Window, Window]:
    """The first partition and the hour in progress (the last partition) as windows."""
    last = Window.containing(dt.datetime.now(dt.UTC))
    first_key = fill_partitions.get_first_partition_key()
    return (Window.from_key(first_key) if first_key else last), last


@dg.sensor(
    name="fill_journal_sensor",
    target=fill_events_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=SENSOR_DEFAULT_STATUS,
    description=(
        "Requests a run for every hourly window whose journal data is new or changed (new hour,"
        " new segment, grown segment, late fill in an old hour); cursor in the instance storage."
    ),
)
def fill_journal_sensor(
    context: dg.SensorEvaluationContext, journal: FillSourceResource
) -> dg.SensorResult | dg.SkipReason:
    if journal.kind != "journal":
        return dg.SkipReason(f"FILL_SOURCE is {journal.kind}: fill_stream_sensor follows it")
    started_ns = time.time_ns()
    cursor = FollowCursor.from_json(context.cursor)
    states, ignored = scan(journal.root)
    first, last = partition_bounds()
    decision = plan(
        states,
        cursor,
        scan_started_ns=started_ns,
        in_progress=windows_in_progress(context.instance),
        first=first,
        last=last,
        horizon_hours=SENSOR_HORIZON_HOURS,
    )
    if ignored:
        context.log.warning(f"ignored outside the journal layout: {sorted(ignored)[:10]}")
    if decision.out_of_range:
        context.log.warning(
            f"hours outside the partitions, not requested: {decision.out_of_range[:10]}"
        )
    if decision.deferred:
        context.log.info(f"deferred (a run is queued or in progress): {decision.deferred}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=request.run_key,
                partition_key=request.window.key,
                tags={"competition/fingerprint": request.fingerprint},
            )
            for request in decision.requests
        ],
        cursor=decision.cursor.to_json(),
    )


@dg.sensor(
    name="fill_stream_sensor",
    target=fill_events_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=SENSOR_DEFAULT_STATUS
    if os.environ.get("FILL_SOURCE") == "nats"
    else dg.DefaultSensorStatus.STOPPED,
    description=(
        "With FILL_SOURCE=nats: requests a run for every window that received messages since the"
        " last stream sequence it saw (its cursor, in the instance storage)."
    ),
)
def fill_stream_sensor(
    context: dg.SensorEvaluationContext, journal: FillSourceResource
) -> dg.SensorResult | dg.SkipReason:
    if journal.kind != "nats":
        return dg.SkipReason(f"FILL_SOURCE is {journal.kind}: fill_journal_sensor follows it")
    source = journal.source()
    assert isinstance(source, StreamSource)
    cursor = json.loads(context.cursor) if context.cursor else {"last_seq": 0, "pending": []}
    windows, last_seq = windows_since(source, cursor["last_seq"])
    windows |= {Window.from_key(key) for key in cursor.get("pending", [])}
    in_progress = windows_in_progress(context.instance)
    first, last = partition_bounds()
    wanted = sorted(w for w in windows if first <= w <= last)
    deferred = [w.key for w in wanted if w.key in in_progress]
    requests = [
        dg.RunRequest(run_key=f"{w.key}@seq{last_seq}", partition_key=w.key)
        for w in wanted
        if w.key not in in_progress
    ]
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps({"last_seq": last_seq, "pending": deferred})
    )
