"""The code location's settings: every environment variable of README's "Environment" table that
the Dagster layer uses, read in one place into a frozen :class:`Settings`.

Why one place: Dagster needs some of these when the definitions are built (the partitions'
start, the retry policy, the sensors' interval), so they used to be read at import by whichever
module built the object, and tests had to set variables before importing anything. Now the
modules build their definitions from a ``Settings`` (``definitions.build_defs``), and only
:func:`current` reads the environment: once per process, when the code server imports
``competition_pipeline.definitions``, which is what a deployment expects (a change needs a
restart, docs/operations.md). Tests build definitions from ``load()`` or ``dataclasses.replace``.

Secrets (``COMPETITION_DATABASE_URL``, ``FILL_JOURNAL_DIR``) are not here: the resources take them
as ``EnvVar`` so that the UI shows their names, never their values. The alert targets are read at
each tick (:func:`alert_targets`) so a new webhook needs no restart. No Dagster import here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PARTITIONS_START = "2026-01-01-00:00"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


_NATS_VARIABLES = (
    "NATS_URL",
    "NATS_CREDS",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
)


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    """The environment as the Dagster layer reads it; each default is the README's."""

    # The asset (defs/fill_events.py, defs/partitions.py).
    partitions_start: str = DEFAULT_PARTITIONS_START  # FILL_PARTITIONS_START
    retry_max: int = 3  # FILL_RETRY_MAX
    retry_delay_seconds: float = 10.0  # FILL_RETRY_DELAY_SECONDS
    freshness_fail_minutes: float = 10.0  # FILL_FRESHNESS_FAIL_MINUTES
    freshness_warn_minutes: float = 5.0  # FILL_FRESHNESS_WARN_MINUTES
    # The fill source (resources.py).
    fill_source: str = "journal"  # FILL_SOURCE: journal | nats
    nats_url: str = DEFAULT_NATS_URL  # NATS_URL
    # Which of NATS_URL and NATS's authentication variables are set: the resource takes each as
    # an EnvVar (its value is never kept here, so never shown).
    nats_variables: frozenset[str] = frozenset()
    stream: str | None = None  # FILL_STREAM (None: the source's default)
    subject_prefix: str | None = None  # FILL_SUBJECT_PREFIX
    lateness_seconds: int | None = None  # FILL_LATENESS_SECONDS
    # The reject budget (resources.RecordingPolicy).
    strict: bool = False  # FILL_STRICT
    max_rejects: int | None = None  # FILL_MAX_REJECTS
    max_reject_fraction: float | None = None  # FILL_MAX_REJECT_FRACTION
    rejects_error_threshold: int = 100  # FILL_REJECTS_ERROR_THRESHOLD
    # The follow sensors (defs/follow.py, recording/follow.py).
    sensor_interval_seconds: int = 30  # FILL_SENSOR_INTERVAL_SECONDS
    sensor_default_running: bool = False  # FILL_SENSOR_DEFAULT_STATUS=running
    sensor_max_requests: int = 24  # FILL_SENSOR_MAX_REQUESTS
    retry_backoff_seconds: float = 15.0  # FILL_RETRY_BACKOFF_SECONDS
    retry_backoff_max_seconds: float = 600.0  # FILL_RETRY_BACKOFF_MAX_SECONDS
    dead_run_seconds: float = 180.0  # FILL_DEAD_RUN_SECONDS
    # The open hour's follower (recording/live_hour.py, defs/live_hour.py).
    follow_open_hour: bool = True  # FILL_FOLLOW_OPEN_HOUR
    follow_interval_seconds: float = 1.0  # FILL_FOLLOW_INTERVAL_SECONDS
    follow_lateness_seconds: float = 60.0  # FILL_FOLLOW_LATENESS_SECONDS
    follow_standings_seconds: float = 5.0  # FILL_FOLLOW_STANDINGS_SECONDS
    # The alerts sensor (alerts.py).
    alert_interval_seconds: int = 15  # ALERT_INTERVAL_SECONDS
    alert_backoff_seconds: float = 15.0  # ALERT_BACKOFF_SECONDS
    # Maintenance jobs (defs/history.py, defs/months.py).
    run_history_retention_days: float = 3.0  # RUN_HISTORY_RETENTION_DAYS
    retention_months: int = 13  # FILL_RETENTION_MONTHS
    archive_dir: str = ""  # FILL_ARCHIVE_DIR
    owner_database_url_set: bool = False  # COMPETITION_OWNER_DATABASE_URL is set

    @property
    def follows_stream(self) -> bool:
        return self.fill_source == "nats"

    @property
    def follower_runs(self) -> bool:
        """The open hour is followed by one long run, for the journal (from its committed
        offsets) and the stream (from its committed stream position) alike."""
        return self.follow_open_hour


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (the process environment by default), now."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        return env.get(name) or None  # an empty variable is an unset one

    def number(name: str, kind: type, default):  # noqa: ANN001, ANN202
        value = get(name)
        return kind(value) if value is not None else default

    defaults = Settings()
    return Settings(
        partitions_start=get("FILL_PARTITIONS_START") or DEFAULT_PARTITIONS_START,
        retry_max=number("FILL_RETRY_MAX", int, defaults.retry_max),
        retry_delay_seconds=number("FILL_RETRY_DELAY_SECONDS", float, defaults.retry_delay_seconds),
        freshness_fail_minutes=number(
            "FILL_FRESHNESS_FAIL_MINUTES", float, defaults.freshness_fail_minutes
        ),
        freshness_warn_minutes=number(
            "FILL_FRESHNESS_WARN_MINUTES", float, defaults.freshness_warn_minutes
        ),
        fill_source=env.get("FILL_SOURCE", "journal"),
        nats_url=env.get("NATS_URL", DEFAULT_NATS_URL),
        nats_variables=frozenset(n for n in _NATS_VARIABLES if env.get(n)),
        stream=env.get("FILL_STREAM"),
        subject_prefix=env.get("FILL_SUBJECT_PREFIX"),
        lateness_seconds=number("FILL_LATENESS_SECONDS", int, None),
        strict=_flag(env.get("FILL_STRICT", "false")),
        max_rejects=number("FILL_MAX_REJECTS", int, None),
        max_reject_fraction=number("FILL_MAX_REJECT_FRACTION", float, None),
        rejects_error_threshold=number(
            "FILL_REJECTS_ERROR_THRESHOLD", int, defaults.rejects_error_threshold
        ),
        sensor_interval_seconds=number(
            "FILL_SENSOR_INTERVAL_SECONDS", int, defaults.sensor_interval_seconds
        ),
        sensor_default_running=env.get("FILL_SENSOR_DEFAULT_STATUS", "stopped").lower()
        == "running",
        sensor_max_requests=number("FILL_SENSOR_MAX_REQUESTS", int, defaults.sensor_max_requests),
        retry_backoff_seconds=number(
            "FILL_RETRY_BACKOFF_SECONDS", float, defaults.retry_backoff_seconds
        ),
        retry_backoff_max_seconds=number(
            "FILL_RETRY_BACKOFF_MAX_SECONDS", float, defaults.retry_backoff_max_seconds
        ),
        dead_run_seconds=number("FILL_DEAD_RUN_SECONDS", float, defaults.dead_run_seconds),
        follow_open_hour=_flag(env.get("FILL_FOLLOW_OPEN_HOUR", "true")),
        follow_interval_seconds=number(
            "FILL_FOLLOW_INTERVAL_SECONDS", float, defaults.follow_interval_seconds
        ),
        follow_lateness_seconds=number(
            "FILL_FOLLOW_LATENESS_SECONDS", float, defaults.follow_lateness_seconds
        ),
        follow_standings_seconds=number(
            "FILL_FOLLOW_STANDINGS_SECONDS", float, defaults.follow_standings_seconds
        ),
        alert_interval_seconds=number(
            "ALERT_INTERVAL_SECONDS", int, defaults.alert_interval_seconds
        ),
        alert_backoff_seconds=number(
            "ALERT_BACKOFF_SECONDS", float, defaults.alert_backoff_seconds
        ),
        run_history_retention_days=number(
            "RUN_HISTORY_RETENTION_DAYS", float, defaults.run_history_retention_days
        ),
        retention_months=number("FILL_RETENTION_MONTHS", int, defaults.retention_months),
        archive_dir=env.get("FILL_ARCHIVE_DIR", ""),
        owner_database_url_set=bool(get("COMPETITION_OWNER_DATABASE_URL")),
    )


@functools.cache
def current() -> Settings:
    """The process's settings, read from the environment on first use and then kept."""
    return load()


@dataclass(frozen=True)
class AlertTargets:
    """Where alerts go: read at every tick of the alerts sensor (secrets, changeable live)."""

    webhook_url: str | None = None  # ALERT_WEBHOOK_URL
    slack_bot_token: str | None = None  # SLACK_BOT_TOKEN
    slack_channel: str | None = None  # SLACK_ALERT_CHANNEL
    slack_api_url: str | None = None  # SLACK_API_URL (a Slack-compatible endpoint, and tests)


def alert_targets(environ: Mapping[str, str] | None = None) -> AlertTargets:
    env = os.environ if environ is None else environ
    return AlertTargets(
        webhook_url=env.get("ALERT_WEBHOOK_URL") or None,
        slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
        slack_channel=env.get("SLACK_ALERT_CHANNEL") or None,
        slack_api_url=env.get("SLACK_API_URL") or None,
    )
