"""Dagster resources: the competition database and the fill source, configured by ``EnvVar``.

Configure them with ``EnvVar`` (as ``definitions.py`` does), never with a literal URL: Dagster shows
an ``EnvVar`` by name in the UI and launchpad, so the password never reaches the UI, the run config
or the logs. Every message these resources produce uses the redacted URL.
"""

import threading

from dagster import ConfigurableResource
from pydantic import Field

from competition_pipeline.sources import FillSource
from competition_pipeline.sources.journal import JournalSource
from competition_pipeline.store import CompetitionStore

_schema_lock = threading.Lock()
_schema_ready: set[str] = set()


class CompetitionDatabase(ConfigurableResource):
    """The PostgreSQL database holding the competition tables (``COMPETITION_DATABASE_URL``)."""

    url: str = Field(
        description="postgresql:// or postgresql+psycopg:// URL; pass it as EnvVar, never inline."
    )
    connect_timeout_seconds: int = Field(default=10, description="libpq connect_timeout.")

    def store(self) -> CompetitionStore:
        """The store, with the project's tables created once per process."""
        store = CompetitionStore(self.url, connect_timeout=self.connect_timeout_seconds)
        with _schema_lock:
            if self.url not in _schema_ready:
                store.ensure_schema()
                _schema_ready.add(self.url)
        return store


class FillJournal(ConfigurableResource):
    """The engine's fill journal directory tree (``FILL_JOURNAL_DIR``)."""

    root: str = Field(description="Root of the date=YYYY-MM-DD/hour=HH/ segment tree.")

    def source(self) -> FillSource:
        return JournalSource(self.root)
