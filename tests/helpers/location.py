"""The code location's definitions as the in-process tests use them, built from settings.

``TEST_ENVIRONMENT`` (tests/helpers/environment.py) makes retries fast; a variable set in the
environment wins, as a deployment's would. A test that needs other settings builds its own
definitions: ``build_follow_sensors(replace(SETTINGS, dead_run_seconds=0.5))``.
"""

import os

from competition_pipeline import settings
from competition_pipeline.defs.alerts import build_alerts_sensor
from competition_pipeline.defs.checks import build_checks
from competition_pipeline.defs.fill_events import build_fill_asset
from competition_pipeline.defs.follow import build_follow_sensors
from tests.helpers.environment import TEST_ENVIRONMENT

SETTINGS = settings.load({**TEST_ENVIRONMENT, **os.environ})

competition_fill_events = build_fill_asset(SETTINGS)
reconciles_with_journal, no_conflicting_duplicates, rejects_within_budget = build_checks(SETTINGS)
fill_journal_sensor, fill_stream_sensor = build_follow_sensors(SETTINGS)
competition_alerts = build_alerts_sensor(SETTINGS)
