"""The job the sensor and the schedule launch: the partitioned ``competition_fill_events``."""

import dagster as dg

from competition_pipeline.defs.partitions import FILL_EVENTS_KEY

fill_events_job = dg.define_asset_job(
    "competition_fill_events_job",
    selection=dg.AssetSelection.assets(FILL_EVENTS_KEY),
    description="Record hourly windows of the fill journal into competition_fill_events.",
)
