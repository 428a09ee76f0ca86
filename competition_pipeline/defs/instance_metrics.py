"""What the metrics exporter reads from the Dagster instance, as plain values.

The exporter (``tools/metrics.py``) turns these into Prometheus metrics; reading the instance is
Dagster's side, so it lives here and the tools layer imports no Dagster name.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from competition_pipeline.defs.dagster_internals import FreshnessState, InstigatorType
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
from competition_pipeline.defs.runs import records_fill_asset

#: The freshness states the exporter reports, one gauge each (1 for the current one).
FRESHNESS_STATES = tuple(state.value for state in FreshnessState)


@dataclass(frozen=True)
class SensorState:
    name: str
    running: bool
    last_tick: float | None  # Unix time of its last tick, None before the first


@dataclass(frozen=True)
class InstanceMetrics:
    record_failures: int  # failed runs recording competition_fill_events (not other jobs')
    sensors: list[SensorState]
    runs_by_status: dict[str, int]
    freshness: str  # competition_fill_events' FreshnessState (UNKNOWN before an evaluation)


def open_instance() -> dg.DagsterInstance:
    """The instance of ``DAGSTER_HOME``."""
    return dg.DagsterInstance.get()


def read_instance_metrics(instance: dg.DagsterInstance) -> InstanceMetrics:
    # A failed run of the asset is one failed window recording (a backfill range stops at the
    # window that failed); failed runs of the rebuild, retention or pruning jobs are not.
    failures = sum(
        records_fill_asset(record.dagster_run)
        for record in instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
        )
    )
    sensors = [
        SensorState(
            state.instigator_name,
            state.is_running,
            getattr(state.instigator_data, "last_tick_timestamp", None) or None,
        )
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    ]
    runs = {
        status.value: instance.get_runs_count(dg.RunsFilter(statuses=[status]))
        for status in dg.DagsterRunStatus
    }
    record = instance.get_freshness_state_records([FILL_EVENTS_KEY]).get(FILL_EVENTS_KEY)
    freshness = record.freshness_state.value if record is not None else "UNKNOWN"
    return InstanceMetrics(failures, sensors, runs, freshness)
