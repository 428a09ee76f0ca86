"""The one-command local start (`bin/start`, `competition-pipeline up`) on embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from competition_pipeline import metrics
from tests.conftest import REPO
from tests.dagster_dev import free_port

pytestmark = pytest.mark.slow


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening TCP socket on ``port`` (from /proc/net/tcp{,6})."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    addresses.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                else:
                    addresses.add(f"ipv6:{address}")
    return addresses


def test_up_serves_the_ui_on_loopback_records_the_sample_and_stops_cleanly(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "COMPETITION_DATABASE_URL",
            "DAGSTER_POSTGRES_URL",
            "DAGSTER_HOME",
            "FILL_JOURNAL_DIR",
        )
    }
    env.update(COMPETITION_STATE_DIR=str(tmp_path / "state"), FILL_SENSOR_INTERVAL_SECONDS="3")
    command = [str(Path(sys.executable).with_name("competition-pipeline")), "up"]
    command += ["--port", str(port), "--hours", "2", "--fills-per-hour", "200", "--rate", "20"]
    command += ["--metrics-port", str(metrics_port)]
    log = (tmp_path / "up.log").open("w")
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        recorded = 0
        socket_dir = tmp_path / "state" / "pg"
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                assert graphql(port, "{ version }")["version"]
                with psycopg.connect(
                    host=str(socket_dir), dbname="competition", user="postgres"
                ) as c:
                    recorded = c.execute(
                        "SELECT count(DISTINCT window_start) FROM competition_fill_events"
                    ).fetchone()[0]
            except (OSError, psycopg.Error):
                pass
            if recorded >= 3:  # two sample hours and the open hour, by the running sensor
                break
            time.sleep(2)
        assert recorded >= 3, (tmp_path / "up.log").read_text()[-4000:]
        # The webserver and the metrics exporter listen on loopback only.
        assert listening_addresses(port) == {"127.0.0.1"}
        assert listening_addresses(metrics_port) == {"127.0.0.1"}
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            scraped = metrics.samples(response.read().decode())
        assert scraped["competition_fill_rows_total"] > 0
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=90)
    assert code == 0
    # The embedded PostgreSQL was stopped with it.
    assert not (tmp_path / "state" / "pg" / "postmaster.pid").exists()
