"""The open hour's follower as a Dagster job: ``competition_fill_live_hour_job``.

The follower is :class:`~competition_pipeline.recording.live_hour.LiveHour` (plain Python); this
module is its thin Dagster side. A job of its own, not a run of the asset job, for two reasons:

* **its own pool.** A pool belongs to an op's definition, so a follower run of the asset's job
  would hold one of ``competition_db``'s slots for an hour, and closed windows, backfills and
  rebuilds would wait behind it. The follower's op runs in pool ``competition_live_hour``
  (``LIVE_HOUR_POOL``) instead; one follower per hour is the lease's rule, not the pool's.
* **no check steps left "In Progress" for the hour.** The op reports the window's
  materializations itself (progress every minute, the last one at its end) and evaluates the
  three checks once, after its last materialization, as events of the window's partition.

**A stop is not a failure.** While the follower runs, SIGTERM and SIGINT (a local start stopped,
``dagster dev``, a code server or a Celery worker shut down: systemd signals every process of the
unit) only set a flag: the load in progress commits, the lease is handed back, and the run ends
SUCCESS with ``stopped`` in its last materialization, its log and the run tag
``competition/stopped``. Dagster would otherwise raise ``DagsterExecutionInterruptedError`` in
the step, which the retry policy turns into a retry and the run into a FAILURE.
"""

import datetime as dt
import socket
from collections.abc import Iterator
from typing import Any

import dagster as dg

from competition_pipeline.defs.checks import WindowChecks
from competition_pipeline.defs.failures import failing_step, refused
from competition_pipeline.defs.fill_events import log_report, report_metadata, retired_message
from competition_pipeline.defs.hosts import check_deployment, deployment_op_tags, tag_host
from competition_pipeline.defs.partitions import (
    FILL_EVENTS_KEY,
    fill_partitions,
    fill_retry_policy,
)
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.defs.runs import holding_run_lock
from competition_pipeline.defs.standings import report_follower_leaderboard
from competition_pipeline.defs.stops import StopSignals, mark_stopped
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.checks import NO_CONFLICTS, RECONCILES, REJECTS
from competition_pipeline.recording.follow import FOLLOW_TAG
from competition_pipeline.recording.live_hour import HourRetired, LiveHour, LiveHourReport
from competition_pipeline.settings import Settings
from competition_pipeline.store.standings import Competitions

LIVE_HOUR_JOB = "competition_fill_live_hour_job"
#: The follower's own pool (dagster.yaml's default_limit: the closing hour's follower during its
#: lateness and the new hour's at once). ``competition_db`` is the windows' loads' alone.
LIVE_HOUR_POOL = "competition_live_hour"
#: How often a follower reports its progress as a materialization of its partition (the UI's
#: counts of the open hour, and the asset's freshness).
FOLLOW_PROGRESS_SECONDS = 60.0


def follow_until(settings: Settings, window: Window) -> float:
    """When the follower of ``window`` ends: the hour closed past its lateness (late fills after
    that are recorded by a run per change, as for any closed hour)."""
    return window.end.timestamp() + settings.follow_lateness_seconds


def _metadata(report: LiveHourReport, host: str, *, final: bool) -> dict[str, Any]:
    assert report.totals is not None
    metadata = {
        **report_metadata(report.totals),
        "host": host,
        # "final" only when the hour is closed (the standings sensor skips the rest: the
        # follower keeps the standings itself).
        "follower": "final" if final else "progress",
        "follower_loads": report.loads,
        "follower_rows_inserted": report.rows,
        "follower_generation": report.generation,
        "standings_refreshes": report.refreshes,
    }
    if report.took_over_from:
        metadata["follower_took_over_from"] = report.took_over_from
    if report.stopped:
        metadata["stopped"] = report.ended
    return metadata


def build_live_hour_job(settings: Settings) -> dg.JobDefinition:
    """``competition_fill_live_hour_job``: one run follows one open hour (partition)."""

    @dg.op(
        name="competition_fill_live_hour",
        pool=LIVE_HOUR_POOL,
        out={},  # it yields the asset's materializations and check evaluations, no output
        retry_policy=fill_retry_policy(settings),
        tags=deployment_op_tags(settings),
        description=(
            "Follows the open hour: commits what the journal (or stream) appended every second,"
            " keeps the running competitions' standings a few seconds behind, reports the"
            " window's running totals every minute and ends once the hour is closed past its"
            " lateness (or on a stop), with the window's checks."
        ),
    )
    def competition_fill_live_hour(
        context: dg.OpExecutionContext,
        database: CompetitionDatabase,
        fill_source: FillSourceResource,
        policy: RecordingPolicy,
    ) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        signals = StopSignals()
        yield from signals.guard(
            _live_hour(context, settings, database, fill_source, policy, signals)
        )

    @dg.job(
        name=LIVE_HOUR_JOB,
        partitions_def=fill_partitions(settings),
        executor_def=dg.in_process_executor,
        # No run retries (dagster.yaml's run_retries) for a follower: the sensor alone asks for
        # the next one, else a follower marked dead gets both a retry and a replacement at once.
        tags={FOLLOW_TAG: "open-hour", "dagster/max_retries": "0"},
        description=(
            "The open hour's follower: one run per open hour, in pool competition_live_hour,"
            " requested by the fill sensors (docs/recording.md)."
        ),
    )
    def competition_fill_live_hour_job() -> None:
        competition_fill_live_hour()

    return competition_fill_live_hour_job


def _live_hour(
    context: dg.OpExecutionContext,
    settings: Settings,
    database: CompetitionDatabase,
    fill_source: FillSourceResource,
    policy: RecordingPolicy,
    signals: StopSignals,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The op's body: take the hour, follow it, end (closed, stopped or superseded)."""
    check_deployment(context, settings)  # type: ignore[arg-type]
    host = tag_host(context)  # type: ignore[arg-type]
    window = Window.from_key(context.partition_key)
    until = follow_until(settings, window)
    context.log.info(
        f"following {window.key} until {dt.datetime.fromtimestamp(until, dt.UTC):%H:%M:%S}"
        f" UTC: a load every {settings.follow_interval_seconds:g}s from the committed"
        f" offsets, progress every {FOLLOW_PROGRESS_SECONDS:.0f}s"
    )
    with holding_run_lock(context, database, "not followed (nothing of it committed)"):  # type: ignore[arg-type]
        live = LiveHour(
            fill_source.source(),
            database.store(),
            window,
            context.run.run_id,
            until,
            host=host,
            run_created=_created(context),
            interval=settings.follow_interval_seconds,
            standings_seconds=settings.follow_standings_seconds,
            progress_seconds=FOLLOW_PROGRESS_SECONDS,
            reject_budget=policy.reject_budget(),
            stop=signals.stop,
            stop_reason=lambda: (
                f"{', '.join(signals.received)} (a shutdown of {socket.gethostname()})"
            ),
        )
        last = yield from _follow(context, live, host)
        if last.superseded:
            context.log.warning(f"{window.key} {last.ended}")
            return
        if last.stopped:
            mark_stopped(context, last.ended or "stopped")
            context.log.info(
                f"{window.key} {last.ended}: every load before it committed, the hour handed"
                f" back ({last.loads} loads, {last.rows} rows); the next follower starts from"
                " the committed offsets"
            )
            return
        assert last.totals is not None
        log_report(context, last.totals)  # type: ignore[arg-type]
        context.log.info(
            f"followed {window.key}: {last.loads} loads, {last.rows} rows inserted, standings"
            f" refreshed {last.refreshes} times; {last.bridged} loads of the next hour"
            f" {Window(window.end).key} while its own follower started"
        )
        checks = WindowChecks(database, fill_source, policy, instance=context.instance)
        for name in (RECONCILES, NO_CONFLICTS, REJECTS):
            yield checks.evaluation(name, window)


def _created(context: dg.OpExecutionContext) -> dt.datetime | None:
    """When the run was created (the lease's order: the newer follower run wins)."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    if record is None:
        return None
    created = record.create_timestamp
    return created if created.tzinfo else created.replace(tzinfo=dt.UTC)


def _follow(
    context: dg.OpExecutionContext, live: LiveHour, host: str
) -> Iterator[dg.AssetMaterialization]:
    """The follower's reports as materializations of its partition; returns the last report.
    The leaderboard the UI shows (``competition_standings``) is reported with them whenever the
    follower refreshed the standings since the last one. A source or database error fails the
    step as a window's would (the RetryPolicy retries it; a new attempt takes the hour again and
    starts from the committed offsets)."""
    leaderboard_refreshes = 0
    stopped = (
        f"window {live.window.key} follower stopped (every load before it is committed; the next"
        " attempt starts from its offsets)"
    )
    try:
        with failing_step(stopped):
            for report in live.run():
                if report.totals is not None:  # none when superseded: it wrote nothing
                    final = report.ended is not None and not report.stopped
                    yield dg.AssetMaterialization(
                        asset_key=FILL_EVENTS_KEY,
                        partition=live.window.key,
                        metadata=_metadata(report, host, final=final),
                    )
                if report.refreshes > leaderboard_refreshes and not report.superseded:
                    leaderboard_refreshes = report.refreshes
                    report_follower_leaderboard(
                        context.instance, Competitions(live.store), live.window, live.run_id
                    )
                if report.ended is not None:
                    return report
    except HourRetired:
        raise refused(retired_message([live.window.key])) from None
    raise AssertionError("the follower ended without its last report")
