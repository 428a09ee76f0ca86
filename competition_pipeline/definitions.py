"""The code location: ``dagster dev -m competition_pipeline.definitions``.

``defs`` is built once, at import, from the process's settings (``settings.current()``): the
code server reads the environment then, once. :func:`build_defs` builds the same location from
any :class:`~competition_pipeline.settings.Settings` (tests, tools).
"""

import dagster as dg

from competition_pipeline import settings as settings_module
from competition_pipeline.defs.alerts import build_alerts_sensor
from competition_pipeline.defs.checks import build_checks
from competition_pipeline.defs.fill_events import build_fill_asset
from competition_pipeline.defs.follow import build_follow_sensors
from competition_pipeline.defs.history import build_prune_run_history
from competition_pipeline.defs.jobs import fill_events_job
from competition_pipeline.defs.live_hour import build_live_hour_job
from competition_pipeline.defs.months import (
    build_retention,
    competition_months_daily,
    competition_months_job,
    owner_database,
)
from competition_pipeline.defs.rebuild import build_rebuild_job
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.defs.schedules import competition_fill_events_hourly
from competition_pipeline.defs.standings import (
    competition_standings,
    standings_job,
    standings_refresh_sensor,
)
from competition_pipeline.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The code location's definitions, configured by ``settings``: the only settings the Dagster
    layer reads (``defs/`` never reads the environment itself)."""
    prune_run_history_job, prune_run_history_schedule = build_prune_run_history(settings)
    retention_job, retention_schedule = build_retention(settings)
    live_hour_job = build_live_hour_job(settings)
    return dg.Definitions(
        # Code references: the UI links each asset to its source.
        assets=dg.with_source_code_references([build_fill_asset(settings), competition_standings]),
        asset_checks=build_checks(settings),
        jobs=[
            fill_events_job,
            live_hour_job,
            standings_job,
            prune_run_history_job,
            competition_months_job,
            retention_job,
            build_rebuild_job(settings),
        ],
        sensors=[
            *build_follow_sensors(settings, live_hour_job),
            build_alerts_sensor(settings),
            standings_refresh_sensor,
        ],
        schedules=[
            competition_fill_events_hourly,
            prune_run_history_schedule,
            competition_months_daily,
            retention_schedule,
        ],
        # One process per run: the asset and its checks run one after the other anyway, and a
        # subprocess per step would add seconds to every window the sensor requests.
        executor=dg.in_process_executor,
        resources={
            "database": CompetitionDatabase(url=dg.EnvVar("COMPETITION_DATABASE_URL")),
            # Month retention (DDL) and an applied rebuild (DELETE, UPDATE) need the tables' owner:
            # COMPETITION_OWNER_DATABASE_URL when set (defs/months.py).
            "owner_database": owner_database(settings),
            "fill_source": FillSourceResource.from_settings(settings),
            "policy": RecordingPolicy.from_settings(settings),
        },
    )


defs = build_defs(settings_module.current())
