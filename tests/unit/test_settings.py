"""The settings are read in one place, and definitions are built from any settings: no module of
the code location reads the environment when it is imported."""

from dataclasses import replace
from pathlib import Path

import dagster as dg

from competition_pipeline import settings
from competition_pipeline.definitions import build_defs
from competition_pipeline.settings import Settings

PACKAGE = Path(__file__).resolve().parents[2] / "competition_pipeline"
#: Modules that read the environment on purpose, outside the code location's settings: the CLI
#: and the tools it runs set it up for the processes they start.
#: Besides settings.py, only the operator tools (tools/) read the environment themselves.
#: redaction.py reads the secrets this process was given, to hide them (docs/security.md).
# settings.py reads the code location's settings once; redaction.py the secrets to scrub; dburl.py
# the libpq connection defaults at connect time (as libpq reads its PG* variables), for every
# connection, the instance storage's too, which Dagster builds from dagster.yaml, not settings.
_READERS = {"settings.py", "redaction.py", "dburl.py"}


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    assert settings.load({}) == Settings()
    defaults = Settings()
    assert (defaults.partitions_start, defaults.retry_max, defaults.retry_delay_seconds) == (
        "2026-01-01-00:00",
        3,
        10.0,
    )
    assert (defaults.sensor_interval_seconds, defaults.dead_run_seconds) == (30, 180.0)
    assert not defaults.sensor_default_running and defaults.fill_source == "journal"


def test_variables_are_read_into_settings() -> None:
    read = settings.load(
        {
            "FILL_PARTITIONS_START": "2026-03-01-00:00",
            "FILL_RETRY_MAX": "1",
            "FILL_SENSOR_DEFAULT_STATUS": "Running",
            "FILL_SOURCE": "nats",
            "FILL_MAX_REJECTS": "5",
            "ALERT_BACKOFF_SECONDS": "0",
        }
    )
    assert read.partitions_start == "2026-03-01-00:00" and read.retry_max == 1
    assert read.sensor_default_running and read.follows_stream
    assert read.max_rejects == 5 and read.alert_backoff_seconds == 0.0


def test_definitions_are_built_from_the_settings_given() -> None:
    config = replace(
        Settings(),
        partitions_start="2026-05-01-00:00",
        retry_max=1,
        sensor_interval_seconds=7,
        sensor_default_running=True,
    )
    defs = build_defs(config)
    asset = defs.resolve_assets_def("competition_fill_events")
    assert asset.partitions_def.get_first_partition_key() == "2026-05-01-00:00"
    assert asset.op.retry_policy.max_retries == 1
    sensor = defs.resolve_sensor_def("fill_journal_sensor")
    assert sensor.minimum_interval_seconds == 7
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    stream = defs.resolve_sensor_def("fill_stream_sensor")
    assert stream.default_status == dg.DefaultSensorStatus.STOPPED  # journal source
    assert "fill_source" in defs.resources and "journal" not in defs.resources


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "os.environ" in path.read_text()
        and path.name not in _READERS
        and path.relative_to(PACKAGE).parts[0] != "tools"
    }
    assert readers == set()
