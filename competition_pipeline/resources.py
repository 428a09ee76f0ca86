"""Dagster resources: the competition database and the fill source, configured by ``EnvVar``.

Configure them with ``EnvVar`` (as ``definitions.py`` does), never with a literal URL: Dagster shows
an ``EnvVar`` by name in the UI and launchpad, so the password never reaches the UI, the run config
or the logs. Every message these resources produce uses the redacted URL.
"""

import os
import threading

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from competition_pipeline.pipeline import RejectBudget
from competition_pipeline.sources import FillSource, SourceError
from competition_pipeline.sources.journal import JournalSource
from competition_pipeline.sources.stream import (
    DEFAULT_LATENESS_MS,
    STREAM,
    SUBJECT_PREFIX,
    StreamSource,
)
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


class FillSourceResource(ConfigurableResource):
    """Where the engine's messages are read: the journal (default) or the NATS JetStream stream.

    ``FILL_SOURCE=journal|nats`` chooses; the asset, the checks and the sensors only ever see the
    :class:`~competition_pipeline.sources.FillSource` that :meth:`source` returns.
    """

    kind: str = Field(default="journal", description="journal | nats (FILL_SOURCE)")
    root: str = Field(default="", description="Journal root: date=YYYY-MM-DD/hour=HH/ segments.")
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS_URL")
    stream: str = Field(default=STREAM, description="JetStream stream name")
    subject_prefix: str = Field(
        default=SUBJECT_PREFIX, description="subjects <prefix>.<underlying>"
    )
    lateness_seconds: int = Field(
        default=DEFAULT_LATENESS_MS // 1000, description="allowed publish lateness after a fill"
    )

    def source(self) -> FillSource:
        if self.kind == "nats":
            return StreamSource(
                self.nats_url,
                stream=self.stream,
                subject_prefix=self.subject_prefix,
                lateness_ms=self.lateness_seconds * 1000,
            )
        if self.kind != "journal":
            raise SourceError(
                f"FILL_SOURCE must be journal or nats, not {self.kind!r}", retryable=False
            )
        if not self.root:
            raise SourceError("FILL_JOURNAL_DIR is not set", retryable=False)
        return JournalSource(self.root)

    @classmethod
    def from_environment(cls) -> "FillSourceResource":
        """FILL_SOURCE, FILL_JOURNAL_DIR (as an EnvVar when set), NATS_URL, FILL_STREAM,
        FILL_SUBJECT_PREFIX, FILL_LATENESS_SECONDS."""
        env = os.environ
        return cls(
            kind=env.get("FILL_SOURCE", "journal"),
            # Resolved when a run starts; a missing FILL_JOURNAL_DIR fails that run, not the load.
            root=EnvVar("FILL_JOURNAL_DIR")
            if env.get("FILL_SOURCE", "journal") == "journal"
            else "",
            nats_url=env.get("NATS_URL", "nats://127.0.0.1:4222"),
            stream=env.get("FILL_STREAM", STREAM),
            subject_prefix=env.get("FILL_SUBJECT_PREFIX", SUBJECT_PREFIX),
            lateness_seconds=int(env.get("FILL_LATENESS_SECONDS", DEFAULT_LATENESS_MS // 1000)),
        )
