"""Sensors: follow the journal (``fill_journal_sensor``) or the stream (``fill_stream_sensor``)
until the competition database has committed all of it (alerts: alerts.py).

Each tick compares the source with what the database committed and requests every window that is
behind and that no live run is recording, whatever happened to earlier runs. No run key: what
suppresses a repeat request is a live run of the window, nothing else. The decision and the
cursor of both sensors are pure functions in ``follow.py``; this module is their Dagster side
(the live and dead runs, the run requests), built from the settings by ``build_follow_sensors``.

A run is live while it is queued (waiting for the daemon), or launched (not started, starting,
started) and either holding its liveness lock in the competition database (the asset and its
checks hold it on a connection of their own, so it dies with the worker) or having logged an
event within ``FILL_DEAD_RUN_SECONDS``. A launched run with neither is dead (its worker was
killed, its code server died, or the daemon died while launching it): the sensor marks it failed,
naming why, and its windows are requested again. Its pool slot is given back by the daemon
(``free_slots_after_run_end_seconds``).
"""

import datetime as dt
import time
from collections.abc import Callable, Mapping

import dagster as dg

from competition_pipeline.defs.failures import skipped_tick
from competition_pipeline.defs.jobs import fill_events_job
from competition_pipeline.defs.live_hour import LIVE_HOUR_JOB, build_live_hour_job
from competition_pipeline.defs.partitions import fill_partitions
from competition_pipeline.defs.resources import CompetitionDatabase, FillSourceResource
from competition_pipeline.defs.runs import selects_fill_asset, window_keys
from competition_pipeline.errors import PipelineError
from competition_pipeline.fills.journal import scan
from competition_pipeline.fills.stream import StreamSource, windows_since
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.follow import (
    FOLLOW_TAG,
    Backoff,
    FollowCursor,
    Plan,
    journal_windows_behind,
    keep_stream_position,
    plan,
    stream_wanted,
    stream_windows_behind,
)
from competition_pipeline.settings import Settings
from competition_pipeline.store.database import CommittedWindow, CompetitionStore

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

BehindOf = Callable[[Mapping[Window, CommittedWindow]], Mapping[Window, str]]


def _started(record: dg.RunRecord) -> float:
    return record.start_time or record.create_timestamp.timestamp()


def _quiet_seconds(instance: dg.DagsterInstance, record: dg.RunRecord, now: float) -> float:
    """Seconds since the run's last event (or its start)."""
    events = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False)
    last = events.records[0].timestamp if events.records else 0.0
    return now - max(last, _started(record))


def live_windows(
    instance: dg.DagsterInstance, store: CompetitionStore, log, dead_run_seconds: float
) -> tuple[set[str], list[str]]:
    """Windows that a live run of the asset is recording, and the dead runs marked failed now
    (launched, without the liveness lock and silent for ``dead_run_seconds``)."""
    now = time.time()
    records = [
        r
        for r in instance.get_run_records(dg.RunsFilter(statuses=_LIVE_STATUSES))
        if selects_fill_asset(r.dagster_run)
    ]
    suspects = [
        r
        for r in records
        if r.dagster_run.status in _LAUNCHED and now - _started(r) > dead_run_seconds
    ]
    holding = store.runs_holding_lock(r.dagster_run.run_id for r in suspects) if suspects else set()
    keys: set[str] = set()
    reaped: list[str] = []
    for record in records:
        run = record.dagster_run
        if (
            record in suspects
            and run.run_id not in holding
            and _quiet_seconds(instance, record, now) > dead_run_seconds
        ):
            message = (
                f"run worker lost: run {run.run_id} was {run.status.value} but no live process"
                f" held its liveness lock and it logged nothing for {dead_run_seconds:.0f} s (its"
                " worker was killed, or its code server or the daemon launching it died); marked"
                " failed by the fill sensor, its windows are requested again"
            )
            instance.report_run_failed(run, message=message)
            log.warning(message)
            reaped.append(run.run_id)
            continue
        keys.update(window_keys(run))
    return keys, reaped


def partition_bounds(partitions: dg.PartitionsDefinition) -> tuple[Window, Window]:
    """The first partition and the hour in progress (the last partition) as windows."""
    last = Window.containing(dt.datetime.now(dt.UTC))
    first_key = partitions.get_first_partition_key()
    return (Window.from_key(first_key) if first_key else last), last


def _follows(settings: Settings, window: Window, now: float) -> bool:
    """A request of ``window`` is a follower's (FOLLOW_TAG): the hour is open or closed less than
    its lateness ago (its run then follows it until then, instead of recording it once)."""
    until = window.end.timestamp() + settings.follow_lateness_seconds
    return settings.follower_runs and window.start.timestamp() <= now < until


def _request_tags(settings: Settings, request, now: float) -> dict[str, str]:  # noqa: ANN001
    tags = {
        "competition/behind": request.reason[:200],
        "competition/attempt": str(request.attempt),
    }
    if _follows(settings, request.window, now):
        tags[FOLLOW_TAG] = "open-hour"
    return tags


def _result(
    context: dg.SensorEvaluationContext, decision: Plan, settings: Settings
) -> dg.SensorResult:
    """Run requests (tagged with why, which attempt, and whether the run follows the open hour)
    and the cursor; the log says the rest."""
    if decision.out_of_range:
        context.log.warning(
            f"hours outside the partitions, not requested: {decision.out_of_range[:10]}"
        )
    now = time.time()
    # The open hour is behind all the time while its follower follows it: not news.
    deferred = [k for k in decision.deferred if not _follows(settings, Window.from_key(k), now)]
    if deferred:
        context.log.info(f"behind, a live run is recording them: {deferred[:10]}")
    if decision.retired:
        context.log.info(
            f"retired by retention, not requested ({len(decision.retired)}; a rebuild restores"
            f" one): {decision.retired[:10]}"
        )
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
                tags=_request_tags(settings, request, now),
                # The open hour goes to its follower's job (its own pool), the rest to the asset's.
                job_name=LIVE_HOUR_JOB
                if _follows(settings, request.window, now)
                else fill_events_job.name,
            )
            for request in decision.requests
        ],
        cursor=decision.cursor.to_json(),
    )


def build_follow_sensors(
    settings: Settings, live_hour_job: dg.JobDefinition | None = None
) -> list[dg.SensorDefinition]:
    """``fill_journal_sensor`` and ``fill_stream_sensor``: interval, default status, backoff,
    dead-run time and requests per tick from ``settings``; the open hour's requests go to
    ``live_hour_job`` (the one in the definitions; built from ``settings`` when not given)."""
    jobs = [fill_events_job, live_hour_job or build_live_hour_job(settings)]
    partitions = fill_partitions(settings)
    backoff = Backoff(settings.retry_backoff_seconds, settings.retry_backoff_max_seconds)
    # Stopped by default in a deployment (turn it on in the UI); `bin/start` sets it running.
    default_status = (
        dg.DefaultSensorStatus.RUNNING
        if settings.sensor_default_running
        else dg.DefaultSensorStatus.STOPPED
    )

    def decide(
        context: dg.SensorEvaluationContext,
        store: CompetitionStore,
        behind_of: BehindOf,
        cursor: FollowCursor,
    ) -> Plan:
        """One tick's plan from the committed state, the live runs and ``behind_of(committed)``."""
        committed = store.committed_positions()
        live, _ = live_windows(context.instance, store, context.log, settings.dead_run_seconds)
        first, last = partition_bounds(partitions)
        return plan(
            behind_of(committed),
            committed,
            cursor,
            now_ns=time.time_ns(),
            live=live,
            first=first,
            last=last,
            backoff=backoff,
            max_requests=settings.sensor_max_requests,
            retired=store.retired_windows(),
        )

    def follow_sensor(
        name: str,
        kind: str,
        status: dg.DefaultSensorStatus,
        description: str,
        tick: Callable[
            [dg.SensorEvaluationContext, FillSourceResource, CompetitionStore], Plan | dg.SkipReason
        ],
    ) -> dg.SensorDefinition:
        """A sensor that follows the ``kind`` source with ``tick`` (one tick's plan); both
        sensors' way through: skip when the other source is configured, a failing tick is
        skipped (not failed), the plan becomes run requests and the cursor."""
        other = "fill_stream_sensor" if kind == "journal" else "fill_journal_sensor"

        @dg.sensor(
            name=name,
            jobs=jobs,
            minimum_interval_seconds=settings.sensor_interval_seconds,
            default_status=status,
            description=description,
        )
        def follow(
            context: dg.SensorEvaluationContext,
            fill_source: FillSourceResource,
            database: CompetitionDatabase,
        ) -> dg.SensorResult | dg.SkipReason:
            if fill_source.kind != kind:
                return dg.SkipReason(f"FILL_SOURCE is {fill_source.kind}: {other} follows it")
            try:
                decision = tick(context, fill_source, database.store())
            except PipelineError as exc:
                return skipped_tick(exc)
            if isinstance(decision, dg.SkipReason):
                return decision
            return _result(context, decision, settings)

        return follow

    def journal_tick(
        context: dg.SensorEvaluationContext,
        fill_source: FillSourceResource,
        store: CompetitionStore,
    ) -> Plan | dg.SkipReason:
        if not fill_source.root:
            return dg.SkipReason("FILL_JOURNAL_DIR is not set")
        states, ignored = scan(fill_source.root)
        decision = decide(
            context,
            store,
            lambda committed: journal_windows_behind(states, committed),
            FollowCursor.from_json(context.cursor),
        )
        if ignored:
            context.log.warning(f"ignored outside the journal layout: {sorted(ignored)[:10]}")
        return decision

    def stream_tick(
        context: dg.SensorEvaluationContext,
        fill_source: FillSourceResource,
        store: CompetitionStore,
    ) -> Plan:
        source = fill_source.source()
        assert isinstance(source, StreamSource)
        cursor = FollowCursor.from_json(context.cursor)
        seen, last_seq = windows_since(source, cursor.last_seq)
        wanted = stream_wanted(cursor, seen)
        decision = decide(
            context,
            store,
            lambda committed: stream_windows_behind(wanted, committed, source.origin),
            cursor,
        )
        keep_stream_position(decision, last_seq, wanted)
        return decision

    fill_journal_sensor = follow_sensor(
        "fill_journal_sensor",
        "journal",
        default_status,
        "Requests a run for every hourly window whose journal holds more than the competition"
        " database committed for it (never recorded, new or grown segment, late fill), until"
        " the table has it all; failing windows back off; dead runs are marked failed.",
        journal_tick,
    )
    fill_stream_sensor = follow_sensor(
        "fill_stream_sensor",
        "nats",
        default_status if settings.follows_stream else dg.DefaultSensorStatus.STOPPED,
        "With FILL_SOURCE=nats: requests a run for every window whose newest stream message"
        " is beyond the stream position its latest committed load covered.",
        stream_tick,
    )
    return [fill_journal_sensor, fill_stream_sensor]
