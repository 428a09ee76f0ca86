"""The code location: ``dagster dev -m competition_pipeline.definitions``."""

import dagster as dg

from competition_pipeline.assets import competition_fill_events
from competition_pipeline.resources import CompetitionDatabase, FillJournal

defs = dg.Definitions(
    assets=[competition_fill_events],
    resources={
        "database": CompetitionDatabase(url=dg.EnvVar("COMPETITION_DATABASE_URL")),
        "journal": FillJournal(root=dg.EnvVar("FILL_JOURNAL_DIR")),
    },
)
