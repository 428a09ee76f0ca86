"""The job the sensor and the schedule launch: the partitioned ``competition_fill_events``."""

import dagster as dg

from competition_pipeline.assets import competition_fill_events

fill_events_job = dg.define_asset_job(
    "competition_fill_events_job",
    selection=[competition_fill_events],
    description="Record hourly windows of the fill journal into competition_fill_events.",
)
