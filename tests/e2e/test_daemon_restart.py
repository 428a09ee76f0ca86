"""The daemon killed (SIGKILL) in the middle of a multi-window backfill, then started again: the
backfill ends and the table equals the journal. As in production, the code location runs as its
own gRPC server (runs are its subprocesses), and the webserver and the daemon are separate
processes on PostgreSQL instance storage."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.rows import fill_rows, named
from competition_pipeline.fills.windows import Window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import simulate
from tests.helpers.dagster_dev import LAUNCH, STATUS, DagsterDev, free_port, stored_keys
from tests.helpers.environment import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


def journal_rows(journal: Path, windows: list[Window]) -> set[tuple[int, str]]:
    """Every valid fill's wallet keys, read back from the segments (plain and gzip)."""
    keys = set()
    for window in windows:
        directory = journal / f"date={window.start:%Y-%m-%d}" / f"hour={window.start:%H}"
        for path in sorted(directory.iterdir()):
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            for line in data.splitlines():
                result = parse_line(line)
                if type(result) is Fill:
                    keys.update(
                        (r.trade_id, r.wallet) for r in map(named, fill_rows(result, 0, "", 0))
                    )
    return keys


def test_daemon_killed_mid_backfill_ends_exact(
    dagster_home: Path, database_url: str, journal: Path, tmp_path: Path
) -> None:
    windows = [Window.from_key(f"2026-11-12-{hour:02d}:00") for hour in range(24)]
    sim = simulate.FillSimulator(seed=5)
    for window in windows:
        simulate.write_hour(journal, window, 20_000, sim=sim)
    expected = journal_rows(journal, windows)
    CompetitionStore(database_url).ensure_schema()
    env = dict(os.environ)
    env.update(COMPETITION_DATABASE_URL=database_url, FILL_JOURNAL_DIR=str(journal))
    port, grpc_port = free_port(), free_port()
    log = tmp_path / "processes.log"
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n      location_name: competition_pipeline\n"
    )
    workspace = ["-w", str(workspace_file)]
    code_server = start(
        [str(BIN / "dagster"), "api", "grpc", "-m", "competition_pipeline.definitions"]
        + ["-h", "127.0.0.1", "-p", str(grpc_port)],
        env,
        log,
    )
    # The webserver and the daemon load the location once at start: wait until it serves.
    wait_for_port(grpc_port, code_server, log)
    web = start(
        [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), *workspace], env, log
    )
    daemon = start([str(BIN / "dagster-daemon"), "run", *workspace], env, log)
    dev = DagsterDev(port, web, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                dev.graphql("{ version }")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        params = {
            "assetSelection": [{"path": ["competition_fill_events"]}],
            "partitionNames": [w.key for w in windows],
            "fromFailure": False,
        }
        launched = dev.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
        backfill_id = launched["backfillId"]
        # Wait until the run is recording (some windows stored, not all), then kill the daemon.
        deadline = time.monotonic() + 180
        while not 0 < len(stored_keys(database_url)) < len(expected):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=30)
        partial = len(stored_keys(database_url))
        time.sleep(2)
        daemon = start([str(BIN / "dagster-daemon"), "run", *workspace], env, log)

        def status() -> dict:
            return dev.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]

        deadline = time.monotonic() + 300
        while status()["status"] in ("REQUESTED", "CANCELING"):
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(1)
        final = status()
        if final["status"] != "COMPLETED_SUCCESS":
            # The run died with the daemon's code server: re-running the range is the recovery.
            relaunched = dev.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
            backfill_id = relaunched["backfillId"]
            deadline = time.monotonic() + 300
            while status()["status"] != "COMPLETED_SUCCESS":
                assert status()["status"] in ("REQUESTED",), status()
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(1)
        print(f"killed at {partial} of {len(expected)} rows; first backfill {final['status']}")
        assert stored_keys(database_url) == expected
    finally:
        for process in (daemon, web, code_server):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
