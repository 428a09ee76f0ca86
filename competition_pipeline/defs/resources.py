"""Dagster resources: the competition database and the fill source, configured by ``EnvVar``.

Configure them with ``EnvVar`` (as ``definitions.py`` does), never with a literal URL: Dagster shows
an ``EnvVar`` by name in the UI and launchpad, so the password never reaches the UI, the run config
or the logs. Every message these resources produce uses the redacted URL.
"""

import threading

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.source import FillSource, SourceError
from competition_pipeline.fills.stream import (
    DEFAULT_LATENESS_MS,
    STREAM,
    SUBJECT_PREFIX,
    NatsAuth,
    StreamSource,
)
from competition_pipeline.recording.fill_events import RejectBudget
from competition_pipeline.settings import Settings
from competition_pipeline.store.database import CompetitionStore

_schema_lock = threading.Lock()
_schema_ready: set[str] = set()


class CompetitionDatabase(ConfigurableResource):
    """The PostgreSQL database holding the competition tables (``COMPETITION_DATABASE_URL``)."""

    url: str = Field(
        description="postgresql:// or postgresql+psycopg:// URL; pass it as EnvVar, never inline."
    )
    connect_timeout_seconds: int | None = Field(
        default=None,
        description="libpq connect_timeout (per host); unset: the URL's connect_timeout, else"
        " DATABASE_CONNECT_TIMEOUT, else 10.",
    )

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
    def from_settings(cls, settings: Settings) -> "RecordingPolicy":
        """FILL_STRICT, FILL_MAX_REJECTS, FILL_MAX_REJECT_FRACTION, FILL_REJECTS_ERROR_THRESHOLD."""
        return cls(
            strict=settings.strict,
            max_rejects=settings.max_rejects,
            max_reject_fraction=settings.max_reject_fraction,
            rejects_error_threshold=settings.rejects_error_threshold,
        )


class FillSourceResource(ConfigurableResource):
    """Where the engine's messages are read: the journal (default) or the NATS JetStream stream.

    ``FILL_SOURCE=journal|nats`` chooses; the asset, the checks and the sensors only ever see the
    :class:`~competition_pipeline.fills.source.FillSource` that :meth:`source` returns.
    """

    kind: str = Field(default="journal", description="journal | nats (FILL_SOURCE)")
    root: str = Field(default="", description="Journal root: date=YYYY-MM-DD/hour=HH/ segments.")
    # The NATS connection: every field that is set comes from an EnvVar (from_settings), so the
    # UI and GraphQL show the variable's name, never a password or token.
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS_URL (EnvVar: may hold user:password)"
    )
    nats_creds: str | None = Field(default=None, description="NATS_CREDS: a .creds file's path")
    nats_user: str | None = Field(default=None, description="NATS_USER")
    nats_password: str | None = Field(default=None, description="NATS_PASSWORD (EnvVar)")
    nats_token: str | None = Field(default=None, description="NATS_TOKEN (EnvVar)")
    nats_tls_ca: str | None = Field(default=None, description="NATS_TLS_CA: a CA file's path")
    nats_tls_cert: str | None = Field(default=None, description="NATS_TLS_CERT: client cert")
    nats_tls_key: str | None = Field(default=None, description="NATS_TLS_KEY: its key file")
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
                auth=NatsAuth(
                    creds_file=self.nats_creds,
                    user=self.nats_user,
                    password=self.nats_password,
                    token=self.nats_token,
                    tls_ca_file=self.nats_tls_ca,
                    tls_cert_file=self.nats_tls_cert,
                    tls_key_file=self.nats_tls_key,
                ),
            )
        if self.kind != "journal":
            raise SourceError(
                f"FILL_SOURCE must be journal or nats, not {self.kind!r}", retryable=False
            )
        if not self.root:
            raise SourceError("FILL_JOURNAL_DIR is not set", retryable=False)
        return JournalSource(self.root)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FillSourceResource":
        """FILL_SOURCE, FILL_JOURNAL_DIR (as an EnvVar), NATS_URL and NATS's authentication
        (each set one as an EnvVar), FILL_STREAM, FILL_SUBJECT_PREFIX, FILL_LATENESS_SECONDS."""
        lateness = settings.lateness_seconds
        nats = settings.fill_source == "nats"
        set_ = settings.nats_variables

        def variable(name: str):  # the EnvVar of a variable that is set, else the default
            return EnvVar(name) if nats and name in set_ else None

        return cls(
            kind=settings.fill_source,
            # Resolved when a run starts; a missing FILL_JOURNAL_DIR fails that run, not the load.
            root=EnvVar("FILL_JOURNAL_DIR") if settings.fill_source == "journal" else "",
            nats_url=variable("NATS_URL") or settings.nats_url,
            nats_creds=variable("NATS_CREDS"),
            nats_user=variable("NATS_USER"),
            nats_password=variable("NATS_PASSWORD"),
            nats_token=variable("NATS_TOKEN"),
            nats_tls_ca=variable("NATS_TLS_CA"),
            nats_tls_cert=variable("NATS_TLS_CERT"),
            nats_tls_key=variable("NATS_TLS_KEY"),
            stream=settings.stream or STREAM,
            subject_prefix=settings.subject_prefix or SUBJECT_PREFIX,
            lateness_seconds=DEFAULT_LATENESS_MS // 1000 if lateness is None else lateness,
        )
