"""NATS authentication (issue 33): a NATS server of the test's own, started with user and
password, a token, or TLS, is read by a run through the resource's settings; a wrong secret fails
the run with a message that does not show it. (A credentials file, ``NATS_CREDS``, is passed to
nats-py as ``user_credentials``; it needs an operator set-up and is not started here.)"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.fills.stream import NatsAuth, connect
from competition_pipeline.tools.publish import publish_lines
from tests.helpers.journal import KEY, T0, fill, line
from tests.helpers.location import competition_fill_events
from tests.helpers.sql import query

PASSWORD = "natspw-Secret-31"
TOKEN = "natstoken-Secret-32"


def _answers(url: str, auth: NatsAuth) -> bool:
    async def probe() -> bool:
        try:
            nc = await connect(url, 2.0, auth)
        except Exception:  # noqa: BLE001
            return False
        await nc.close()
        return True

    return asyncio.run(probe())


@contextmanager
def nats_server(tmp_path: Path, *args: str, auth: NatsAuth, scheme: str = "nats") -> Iterator[str]:
    """A nats-server with JetStream and ``args`` (its authentication) on a free port."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp_path / f"nats-{port}"
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _answers(url, auth):
            assert time.monotonic() < deadline and process.poll() is None, "nats-server failed"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _record(
    database_url: str, url: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **fields
) -> tuple[dg.ExecuteInProcessResult, FillSourceResource]:
    """Publish two fills with the publisher's variables ``env``, then run the window with the
    resource's ``fields``."""
    name = f"AUTH_{uuid.uuid4().hex[:8].upper()}"
    prefix = f"a{uuid.uuid4().hex[:8]}.fills"
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    lines = [line(m).encode() for m in (fill(1, T0 + 1), fill(2, T0 + 2))]
    asyncio.run(publish_lines(url, lines, stream=name, prefix=prefix))
    for variable in env:
        monkeypatch.delenv(variable)
    source = FillSourceResource(
        kind="nats", nats_url=url, stream=name, subject_prefix=prefix, lateness_seconds=1, **fields
    )
    return _materialize(database_url, source), source


def _materialize(database_url: str, source: FillSourceResource) -> dg.ExecuteInProcessResult:
    """The window ``KEY`` recorded from ``source`` (``raise_on_error=False``: the test asserts)."""
    return dg.materialize(
        [competition_fill_events],
        partition_key=KEY,
        resources={
            "database": CompetitionDatabase(url=database_url),
            "fill_source": source,
            "policy": RecordingPolicy(),
        },
        raise_on_error=False,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def test_user_and_password_from_the_resource_and_a_wrong_one_is_not_shown(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = NatsAuth(user="fills", password=PASSWORD)
    with nats_server(tmp_path, "--user", "fills", "--pass", PASSWORD, auth=auth) as url:
        assert not _answers(url, NatsAuth())  # the server refuses anyone else
        env = {"NATS_USER": "fills", "NATS_PASSWORD": PASSWORD}
        result, _ = _record(
            database_url, url, monkeypatch, env, nats_user="fills", nats_password=PASSWORD
        )
        assert result.success, _failure(result)
        assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(4,)]
        wrong = "wrong-Secret-33"
        result, _ = _record(
            database_url, url, monkeypatch, env, nats_user="fills", nats_password=wrong
        )
        assert not result.success
        text = _failure(result)
        assert "cannot reach the fill stream" in text and wrong not in text and PASSWORD not in text


def test_a_password_in_the_url_userinfo_is_used_and_never_shown(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = NatsAuth(user="fills", password=PASSWORD)
    with nats_server(tmp_path, "--user", "fills", "--pass", PASSWORD, auth=auth) as url:
        with_userinfo = url.replace("nats://", f"nats://fills:{PASSWORD}@")
        result, _ = _record(database_url, with_userinfo, monkeypatch, {})
        assert result.success, _failure(result)
        (event,) = result.get_asset_materialization_events()
        source = event.materialization.metadata["source"].value
        assert source.endswith(f"nats://fills:***@{url.removeprefix('nats://')}")
        assert PASSWORD not in source


def test_a_token(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with nats_server(tmp_path, "--auth", TOKEN, auth=NatsAuth(token=TOKEN)) as url:
        assert not _answers(url, NatsAuth(token="not-it"))
        result, _ = _record(database_url, url, monkeypatch, {"NATS_TOKEN": TOKEN}, nats_token=TOKEN)
        assert result.success, _failure(result)
        assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(4,)]


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed (openssl)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


def test_tls_with_the_servers_ca(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = _certificates(tmp_path)
    args = (
        "--tls",
        "--tlscert",
        str(cert),
        "--tlskey",
        str(key),
        "--user",
        "fills",
        "--pass",
        PASSWORD,
    )
    auth = NatsAuth(user="fills", password=PASSWORD, tls_ca_file=str(ca))
    with nats_server(tmp_path, *args, auth=auth, scheme="tls") as url:
        env = {"NATS_USER": "fills", "NATS_PASSWORD": PASSWORD, "NATS_TLS_CA": str(ca)}
        result, _ = _record(
            database_url,
            url,
            monkeypatch,
            env,
            nats_user="fills",
            nats_password=PASSWORD,
            nats_tls_ca=str(ca),
        )
        assert result.success, _failure(result)
        assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(4,)]


def test_the_code_locations_resource_authenticates_from_the_environment(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a deployment configures it: FILL_SOURCE=nats, NATS_URL, NATS_USER and NATS_PASSWORD in
    the environment; the resource built from the settings holds EnvVars, resolved by Dagster when
    the run starts."""
    from dataclasses import replace

    from dagster import EnvVar

    from competition_pipeline import settings

    auth = NatsAuth(user="fills", password=PASSWORD)
    with nats_server(tmp_path, "--user", "fills", "--pass", PASSWORD, auth=auth) as url:
        name, prefix = f"ENV_{uuid.uuid4().hex[:8].upper()}", f"e{uuid.uuid4().hex[:8]}.fills"
        env = {"FILL_SOURCE": "nats", "NATS_URL": url, "NATS_USER": "fills"}
        env["NATS_PASSWORD"] = PASSWORD
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        lines = [line(m).encode() for m in (fill(1, T0 + 1), fill(2, T0 + 2))]
        asyncio.run(publish_lines(url, lines, stream=name, prefix=prefix))
        loaded = replace(settings.load(), stream=name, subject_prefix=prefix, lateness_seconds=1)
        source = FillSourceResource.from_settings(loaded)
        assert source.nats_password == EnvVar("NATS_PASSWORD")
        assert source.nats_url == EnvVar("NATS_URL")
        result = _materialize(database_url, source)
        assert result.success, _failure(result)
        assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(4,)]
