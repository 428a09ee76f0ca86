"""What the failover tests (a replicated pair, Patroni) do to the product through Dagster: record a
window with ``materialize`` and ask the journal sensor which windows are behind, with settings
whose retries outlast a promotion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from competition_pipeline.defs.fill_events import build_fill_asset
from competition_pipeline.defs.follow import build_follow_sensors
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.settings import Settings


@dataclass
class Recording:
    """The asset and the journal sensor built from ``settings``."""

    settings: Settings
    asset: dg.AssetsDefinition = field(init=False)
    sensor: dg.SensorDefinition = field(init=False)

    def __post_init__(self) -> None:
        self.asset = build_fill_asset(self.settings)
        self.sensor, _ = build_follow_sensors(self.settings)

    def record(
        self, url: str, journal: Path, key: str, instance: dg.DagsterInstance
    ) -> dg.ExecuteInProcessResult:
        """One window recorded through Dagster (``raise_on_error=False``: the caller asserts)."""
        return dg.materialize(
            [self.asset],
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            resources={
                "database": CompetitionDatabase(url=url),
                "fill_source": FillSourceResource(root=str(journal)),
                "policy": RecordingPolicy(),
            },
        )

    def behind(self, url: str, journal: Path, instance: dg.DagsterInstance) -> list[str]:
        """The windows the journal sensor requests now (one evaluation on ``instance``)."""
        context = dg.build_sensor_context(
            instance=instance,
            resources={
                "fill_source": FillSourceResource(root=str(journal)),
                "database": CompetitionDatabase(url=url),
            },
        )
        result = self.sensor(context)
        assert isinstance(result, dg.SensorResult), result
        return sorted(r.partition_key for r in result.run_requests or [])
