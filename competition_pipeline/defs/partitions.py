"""What the fill asset, its checks, the sensors and the schedules share: the hourly partitions,
the retry policy, the freshness policy, the database pool and the asset's key.

One small module (the model is Dagster's ``project_dbt`` example, ``defs/partitions.py``), so
that checks, sensors and schedules do not import ``fill_events.py`` for these. The policies are
built from :class:`~competition_pipeline.settings.Settings`, never from the environment directly.
"""

import datetime as dt

import dagster as dg

from competition_pipeline.settings import Settings

FILL_EVENTS_KEY = dg.AssetKey("competition_fill_events")
#: The pool the asset's steps run in (dagster.yaml admits 2 at once: docs/operations.md).
DATABASE_POOL = "competition_db"


def fill_partitions(settings: Settings) -> dg.HourlyPartitionsDefinition:
    """Hourly UTC windows keyed YYYY-MM-DD-HH:00; end_offset=1 includes the hour in progress, so
    the open hour can be recorded as it grows (re-running it is idempotent)."""
    return dg.HourlyPartitionsDefinition(
        start_date=settings.partitions_start, timezone="UTC", end_offset=1
    )


def fill_retry_policy(settings: Settings) -> dg.RetryPolicy:
    """Transient failures (the database restarting, a dropped connection) are retried with
    exponential backoff; deterministic ones (a corrupt closed segment, a missing privilege) fail
    at once through Failure(allow_retries=False). FILL_RETRY_DELAY_SECONDS exists so tests need
    not sleep."""
    return dg.RetryPolicy(
        max_retries=settings.retry_max,
        delay=settings.retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def fill_freshness_policy(settings: Settings) -> dg.FreshnessPolicy:
    """Fresh (green in the UI) while some window was recorded within the last
    FILL_FRESHNESS_FAIL_MINUTES; stale (failed) past it, which the alerts sensor reports. The
    sensor re-records the open hour as the journal grows, so a healthy pipeline materializes
    every tick."""
    fail, warn = settings.freshness_fail_minutes, settings.freshness_warn_minutes
    return dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=fail),
        warn_window=dt.timedelta(minutes=warn) if 1 <= warn < fail else None,
    )
