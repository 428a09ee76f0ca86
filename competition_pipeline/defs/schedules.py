"""The hourly safety net: record the window that just closed, even with the sensor off.

Not ``build_schedule_from_partitioned_job``: it requests the *last* partition, which with
``end_offset=1`` (the open hour included) is the hour that has just begun, not the one that just
closed. This schedule is the same thing pointed one hour back: at HH:05 UTC it requests
``HH-1:00`` with run key = the window, once per window.

Use the sensor to follow the journal within seconds (and to pick up late fills in old hours); use
the schedule where the sensor is off or as a second line; use a backfill for ranges.
"""

import datetime as dt

import dagster as dg

from competition_pipeline.defs.jobs import fill_events_job
from competition_pipeline.fills.windows import HOUR, Window


@dg.schedule(
    name="competition_fill_events_hourly",
    job=fill_events_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="At HH:05 UTC, record the window that closed at HH:00.",
)
def competition_fill_events_hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    closed = Window(Window.containing(scheduled).start - HOUR)
    return dg.RunRequest(run_key=closed.key, partition_key=closed.key)
