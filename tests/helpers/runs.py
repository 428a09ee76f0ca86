"""``competition_fill_events`` (and its checks) run in process by Dagster's ``materialize``,
resourced with a test's database and journal, and what a run reports."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from tests.helpers.journal import KEY
from tests.helpers.location import (
    competition_fill_events,
    no_conflicting_duplicates,
    reconciles_with_journal,
    rejects_within_budget,
)

ALL_CHECKS = [reconciles_with_journal, no_conflicting_duplicates, rejects_within_budget]


def materialize(
    database_url: str,
    journal: Path,
    key: str | None = KEY,
    policy: RecordingPolicy | None = None,
    checks: bool = False,
    **kwargs,
) -> dg.ExecuteInProcessResult:
    """The asset (and with ``checks``, its asset checks) for one window, in process."""
    return dg.materialize(
        [competition_fill_events, *(ALL_CHECKS if checks else [])],
        partition_key=key,
        resources={
            "database": CompetitionDatabase(url=database_url),
            "fill_source": FillSourceResource(root=str(journal)),
            "policy": policy or RecordingPolicy(),
        },
        **kwargs,
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The values of the run's one materialization's metadata."""
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}
