"""Dagster's own floor for the benchmark's figure h: the path users run, doing no work.

``dagster asset materialize -m competition_harness.bench_floor --select
competition_fill_events --partition KEY`` goes through everything the real command does (process
start, importing Dagster, loading the instance, creating the run, one asset step and three check
steps, each writing its events to the instance storage) with an asset and checks that do nothing.
What the real command costs beyond this is the project's own work. Used by
``bench.dagster_runs.user_path``; its no-op checks also stand beside the no-op ranged asset of
(f)'s floor (``bench.dagster_runs._floor_definitions``).
"""

from __future__ import annotations

import dagster as dg

from competition_pipeline import settings
from competition_pipeline.defs.partitions import FILL_EVENTS_KEY, fill_partitions
from competition_pipeline.recording.checks import BLOCKING

PARTITIONS = fill_partitions(settings.current())


@dg.asset(key=FILL_EVENTS_KEY, partitions_def=PARTITIONS)
def competition_fill_events() -> dg.MaterializeResult:
    return dg.MaterializeResult()


def noop_checks() -> list[dg.AssetChecksDefinition]:
    """The three checks, by name, blocking and partitions as the real ones, doing nothing."""

    def noop_check(name: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(
            asset=FILL_EVENTS_KEY, name=name, blocking=BLOCKING[name], partitions_def=PARTITIONS
        )
        def check() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        return check

    return [noop_check(name) for name in BLOCKING]


defs = dg.Definitions(
    assets=[competition_fill_events],
    asset_checks=noop_checks(),
    executor=dg.in_process_executor,  # as competition_pipeline.definitions: the same step path
)
