"""The competition tables' schema, managed by Alembic (revisions in ``migrations/versions``).

``upgrade`` is what ``competition-pipeline schema``, the resource's first use, the local start and
the tests run: one transaction, under the advisory lock ``(0x6370, -1)`` so concurrent first runs
queue instead of racing, then ``upgrade head``. A database made by the ``create_all`` of earlier
releases (tables present, no ``alembic_version``) is recognised by the baseline revision, which
creates only missing tables, so it is stamped, not recreated. When the schema is already at head
nothing is executed but a version read: a role without DDL rights (the recorder) works normally,
and when it is behind, that role gets an error naming the missing revisions instead of a half-done
migration. No Dagster here.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from competition_pipeline.errors import TerminalError

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_NAMESPACE = 0x6370
_SCHEMA_LOCK = -1


class SchemaError(TerminalError):
    """The schema is behind and this role cannot bring it to head (or a migration failed)."""


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this release knows."""
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def pending(current: str | None) -> list[str]:
    """Revisions between ``current`` and head, oldest first, as "id (first docstring line)"."""
    script = ScriptDirectory.from_config(_config())
    revisions = list(script.iterate_revisions(head(), current))
    return [f"{r.revision} ({(r.doc or '').strip().splitlines()[0]})" for r in reversed(revisions)]


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine, display_url: str) -> list[str]:
    """Bring the schema to head on ``engine`` (disposed after); returns the revisions applied
    (empty when already there). ``display_url`` names the database in errors (no password)."""
    try:
        with engine.connect() as conn:
            with conn.begin():
                conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(_LOCK_NAMESPACE, _SCHEMA_LOCK))
                )
                current = current_revision(conn)
                if current == head():
                    return []
                todo = pending(current)
                try:
                    command.upgrade(_config(conn), "head")
                    # Anyone may read the schema version: the recorder checks it at start-up.
                    conn.execute(sa.text("GRANT SELECT ON alembic_version TO PUBLIC"))
                except sa.exc.DBAPIError as exc:
                    if isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                        raise SchemaError(
                            f"the schema of {display_url} is at revision"
                            f" {current or 'none'} and this release needs {', '.join(todo)};"
                            " this role may not change it: run `competition-pipeline schema`"
                            " as the tables' owner"
                        ) from None
                    raise
                return todo
    finally:
        engine.dispose()
