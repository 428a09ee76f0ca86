"""The integration tier's fixtures: a NATS server with JetStream, an empty database (for the
schema's own tests), a Dagster instance on the test's Dagster home. Integration tests run the
code in process (Dagster's ``materialize``, sensors evaluated by hand) against real servers."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import nats
import pytest

from competition_pipeline.defs.resources import FillSourceResource
from tests.helpers.sql import fresh_database


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database: for tests of creating and upgrading the schema itself."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance of ``dagster_home`` (PostgreSQL storage in a fresh database)."""
    with dg.DagsterInstance.get() as instance:
        yield instance


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


@pytest.fixture
def stream(nats_url: str) -> Iterator[FillSourceResource]:
    """A stream of its own (name and subjects) for each test, deleted afterwards."""
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    prefix = f"t{uuid.uuid4().hex[:8]}.fills"
    resource = FillSourceResource(
        kind="nats", nats_url=nats_url, stream=name, subject_prefix=prefix, lateness_seconds=1
    )
    yield resource

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(name)
        except Exception:  # noqa: BLE001 (never created)
            pass
        finally:
            await nc.close()

    asyncio.run(delete())
