"""Dagster resources: the competition database and the fill source, configured by ``EnvVar``.

Configure them with ``EnvVar`` (as ``definitions.py`` does), never with a literal URL: Dagster shows
an ``EnvVar`` by name in the UI and launchpad, so the password never reaches the UI, the run config
or the logs. Every message these resources produce uses the redacted URL.
"""

import os
import threading

from dagster import ConfigurableResource
from pydantic import Field

from competition_pipeline.pipeline import RejectBudget
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


class RecordingPolicy(ConfigurableResource):
    """How strictly a window's rejects are treated.

    Tolerant by default: rejects are quarantined, the run succeeds and ``rejects_within_budget``
    warns (ERROR above ``rejects_error_threshold``). ``strict`` fails the run, committing nothing
    of the window, when its rejects exceed ``max_rejects`` or ``max_reject_fraction`` of its lines.
    """

    strict: bool = Field(default=False, description="Fail windows over the reject budget.")
    max_rejects: int | None = Field(default=None, description="Strict mode: rejects allowed.")
    max_reject_fraction: float | None = Field(
        default=None, description="Strict mode: allowed rejects as a fraction of lines read."
    )
    rejects_error_threshold: int = Field(
        default=100, description="rejects_within_budget is an ERROR above this many rejects."
    )

    def reject_budget(self) -> RejectBudget | None:
        if not self.strict:
            return None
        return RejectBudget(self.max_rejects, self.max_reject_fraction)

    @classmethod
    def from_environment(cls) -> "RecordingPolicy":
        """FILL_STRICT, FILL_MAX_REJECTS, FILL_MAX_REJECT_FRACTION, FILL_REJECTS_ERROR_THRESHOLD."""
        env = os.environ
        return cls(
            strict=env.get("FILL_STRICT", "false").lower() in ("1", "true", "yes"),
            max_rejects=int(env["FILL_MAX_REJECTS"]) if env.get("FILL_MAX_REJECTS") else None,
            max_reject_fraction=float(env["FILL_MAX_REJECT_FRACTION"])
            if env.get("FILL_MAX_REJECT_FRACTION")
            else None,
            rejects_error_threshold=int(env.get("FILL_REJECTS_ERROR_THRESHOLD", "100")),
        )


class FillJournal(ConfigurableResource):
    """The engine's fill journal directory tree (``FILL_JOURNAL_DIR``)."""

    root: str = Field(description="Root of the date=YYYY-MM-DD/hour=HH/ segment tree.")

    def source(self) -> FillSource:
        return JournalSource(self.root)
