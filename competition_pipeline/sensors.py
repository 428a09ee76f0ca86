"""Sensors: follow the journal (``fill_journal_sensor``) or the stream (``fill_stream_sensor``)
until the competition database has committed all of it (alerts: alerts.py).

Each tick compares the source with what the database committed (``follow.py``) and requests every
window that is behind and that no live run is recording, whatever happened to earlier runs. No
run key: what suppresses a repeat request is a live run of the window, nothing else.

A run is live while it is queued (waiting for the daemon), or launched (not started, starting,
started) and either holding its liveness lock in the competition database (the asset and its
checks hold it on a connection of their own, so it dies with the worker) or having logged an
event within ``FILL_DEAD_RUN_SECONDS``. A launched run with neither is dead (its worker was
killed, its code server died, or the daemon died while launching it): the sensor marks it failed,
naming why, and its windows are requested again. Its pool slot is given back by the daemon
(``free_slots_after_run_end_seconds``).
"""

import datetime as dt
import os
import time

import dagster as dg
from dagster._core.storage.dagster_run import RunRecord, RunsFilter
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from competition_pipeline.assets import competition_fill_events, fill_partitions
from competition_pipeline.follow import (
    Backoff,
    FollowCursor,
    Plan,
    journal_behind,
    plan,
    stream_behind,
)
from competition_pipeline.jobs import fill_events_job
from competition_pipeline.resources import CompetitionDatabase, FillSourceResource
from competition_pipeline.sources import SourceError
from competition_pipeline.sources.journal import scan
from competition_pipeline.sources.stream import StreamSource, windows_since
from competition_pipeline.store import CompetitionStore, StoreError
from competition_pipeline.windows import Window, windows_between

SENSOR_INTERVAL_SECONDS = int(os.environ.get("FILL_SENSOR_INTERVAL_SECONDS", "30"))
# Stopped by default in a deployment (turn it on in the UI); `bin/start` sets it to "running".
SENSOR_DEFAULT_STATUS = (
    dg.DefaultSensorStatus.RUNNING
    if os.environ.get("FILL_SENSOR_DEFAULT_STATUS", "stopped").lower() == "running"
    else dg.DefaultSensorStatus.STOPPED
)
#: A started run with no liveness lock and no event for this long is dead.
DEAD_RUN_SECONDS = float(os.environ.get("FILL_DEAD_RUN_SECONDS", "180"))
#: Windows whose requests keep failing wait base * 2**(n-1) seconds, capped.
BACKOFF = Backoff(
    float(os.environ.get("FILL_RETRY_BACKOFF_SECONDS", "15")),
    float(os.environ.get("FILL_RETRY_BACKOFF_MAX_SECONDS", "600")),
)
#: Run requests per tick at most (the hour in progress always comes first); the rest follow.
MAX_REQUESTS = int(os.environ.get("FILL_SENSOR_MAX_REQUESTS", "24"))
#: Handed to a worker (or about to be): alive only while the worker shows it. A run the daemon
#: was launching when it died stays NOT_STARTED or STARTING with no worker at all.
_LAUNCHED = {
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
}
_LIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def run_windows(run: dg.DagsterRun) -> list[str]:
    """The window keys a run of the asset records (one partition, or a backfill's range)."""
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        first = Window.from_key(tags[ASSET_PARTITION_RANGE_START_TAG])
        last = Window.from_key(tags[ASSET_PARTITION_RANGE_END_TAG])
        return [w.key for w in windows_between(first.start, last.end)]
    return []


def _records_the_asset(run: dg.DagsterRun) -> bool:
    return run.asset_selection is None or competition_fill_events.key in run.asset_selection


def _started(record: RunRecord) -> float:
    return record.start_time or record.create_timestamp.timestamp()


def _quiet_seconds(instance: dg.DagsterInstance, record: RunRecord, now: float) -> float:
    """Seconds since the run's last event (or its start)."""
    events = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False)
    last = events.records[0].timestamp if events.records else 0.0
    return now - max(last, _started(record))


def live_windows(
    instance: dg.DagsterInstance, store: CompetitionStore, log
) -> tuple[set[str], list[str]]:
    """Windows that a live run of the asset is recording, and the dead runs marked failed now."""
    now = time.time()
    records = [
        r
        for r in instance.get_run_records(RunsFilter(statuses=_LIVE_STATUSES))
        if _records_the_asset(r.dagster_run)
    ]
    suspects = [
        r
        for r in records
        if r.dagster_run.status in _LAUNCHED and now - _started(r) > DEAD_RUN_SECONDS
    ]
    holding = store.runs_holding_lock(r.dagster_run.run_id for r in suspects) if suspects else set()
    keys: set[str] = set()
    reaped: list[str] = []
    for record in records:
        run = record.dagster_run
        if (
            record in suspects
            and run.run_id not in holding
            and _quiet_seconds(instance, record, now) > DEAD_RUN_SECONDS
        ):
            message = (
                f"run worker lost: run {run.run_id} was {run.status.value} but no live process"
                f" held its liveness lock and it logged nothing for {DEAD_RUN_SECONDS:.0f} s (its"
                " worker was killed, or its code server or the daemon launching it died); marked"
                " failed by the fill sensor, its windows are requested again"
            )
            instance.report_run_failed(run, message=message)
            log.warning(message)
            reaped.append(run.run_id)
            continue
        keys.update(run_windows(run))
    return keys, reaped


def partition_bounds() -> tuple[Window, Window]:
    """The first partition and the hour in progress (the last partition) as windows."""
    last = Window.containing(dt.datetime.now(dt.UTC))
    first_key = fill_partitions.get_first_partition_key()
    return (Window.from_key(first_key) if first_key else last), last


def _decide(
    context: dg.SensorEvaluationContext,
    store: CompetitionStore,
    behind_of,
    cursor: FollowCursor,
) -> Plan:
    """One tick's plan from the committed state, the live runs and ``behind_of(committed)``."""
    committed = store.committed_positions()
    live, _ = live_windows(context.instance, store, context.log)
    first, last = partition_bounds()
    return plan(
        behind_of(committed),
        committed,
        cursor,
        now_ns=time.time_ns(),
        live=live,
        first=first,
        last=last,
        backoff=BACKOFF,
        max_requests=MAX_REQUESTS,
    )


def _result(context: dg.SensorEvaluationContext, decision: Plan) -> dg.SensorResult:
    """Run requests (tagged with why and which attempt) and the cursor; the log says the rest."""
    if decision.out_of_range:
        context.log.warning(
            f"hours outside the partitions, not requested: {decision.out_of_range[:10]}"
        )
    if decision.deferred:
        context.log.info(f"behind, a live run is recording them: {decision.deferred[:10]}")
    if decision.backing_off:
        failing = {
            key: f"{decision.cursor.attempts[key].failures + 1} failed, next in {seconds:.0f}s"
            for key, seconds in list(decision.backing_off.items())[:10]
        }
        context.log.warning(f"failing windows, backing off: {failing}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=request.window.key,
                tags={
                    "competition/behind": request.reason[:200],
                    "competition/attempt": str(request.attempt),
                },
            )
            for request in decision.requests
        ],
        cursor=decision.cursor.to_json(),
    )


@dg.sensor(
    name="fill_journal_sensor",
    target=fill_events_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=SENSOR_DEFAULT_STATUS,
    description=(
        "Requests a run for every hourly window whose journal holds more than the competition"
        " database committed for it (never recorded, new or grown segment, late fill), until"
        " the table has it all; failing windows back off; dead runs are marked failed."
    ),
)
def fill_journal_sensor(
    context: dg.SensorEvaluationContext,
    journal: FillSourceResource,
    database: CompetitionDatabase,
) -> dg.SensorResult | dg.SkipReason:
    if journal.kind != "journal":
        return dg.SkipReason(f"FILL_SOURCE is {journal.kind}: fill_stream_sensor follows it")
    if not journal.root:
        return dg.SkipReason("FILL_JOURNAL_DIR is not set")
    try:
        states, ignored = scan(journal.root)
        store = database.store()

        def behind_of(committed):
            return {
                s.window: reason
                for s in states
                if (reason := journal_behind(s, committed.get(s.window))) is not None
            }

        decision = _decide(context, store, behind_of, FollowCursor.from_json(context.cursor))
    except (SourceError, StoreError) as exc:
        return dg.SkipReason(f"nothing decided this tick: {exc}")
    if ignored:
        context.log.warning(f"ignored outside the journal layout: {sorted(ignored)[:10]}")
    return _result(context, decision)


@dg.sensor(
    name="fill_stream_sensor",
    target=fill_events_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=SENSOR_DEFAULT_STATUS
    if os.environ.get("FILL_SOURCE") == "nats"
    else dg.DefaultSensorStatus.STOPPED,
    description=(
        "With FILL_SOURCE=nats: requests a run for every window whose newest stream message is"
        " beyond the stream position its latest committed load covered."
    ),
)
def fill_stream_sensor(
    context: dg.SensorEvaluationContext,
    journal: FillSourceResource,
    database: CompetitionDatabase,
) -> dg.SensorResult | dg.SkipReason:
    if journal.kind != "nats":
        return dg.SkipReason(f"FILL_SOURCE is {journal.kind}: fill_journal_sensor follows it")
    source = journal.source()
    assert isinstance(source, StreamSource)
    cursor = FollowCursor.from_json(context.cursor)
    try:
        seen, last_seq = windows_since(source, cursor.last_seq)
        wanted = dict(cursor.wanted)
        for window, seq in seen.items():
            wanted[window.key] = max(wanted.get(window.key, 0), seq)
        store = database.store()

        def behind_of(committed):
            behind = {}
            for key, seq in wanted.items():
                window = Window.from_key(key)
                reason = stream_behind(seq, committed.get(window), source.origin)
                if reason is not None:
                    behind[window] = reason
            return behind

        decision = _decide(context, store, behind_of, cursor)
    except (SourceError, StoreError) as exc:
        return dg.SkipReason(f"nothing decided this tick: {exc}")
    # Windows the database has covered leave the cursor; the rest stay until it has.
    decision.cursor.last_seq = last_seq
    still = {*decision.behind, *decision.out_of_range}
    decision.cursor.wanted = {k: v for k, v in wanted.items() if k in still}
    return _result(context, decision)
