"""The one-command local start (`bin/start`, `competition-pipeline up`) on embedded PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from competition_pipeline.tools import metrics
from tests.helpers.dagster_dev import free_port, graphql, local_start_environment
from tests.helpers.environment import REPO
from tests.helpers.follower import open_window
from tests.helpers.webhook import Webhook

pytestmark = pytest.mark.slow


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


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that mention ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and text in cmdline:
            found.append(cmdline[:200])
    return found


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The CLI in a separate process, as a user's second shell runs it."""
    command = [str(Path(sys.executable).with_name("competition-pipeline")), *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def partition_keys(port: int) -> list[str]:
    data = graphql(
        port,
        """{ assetNodes(assetKeys: [{path: ["competition_fill_events"]}]) {
              partitionKeysByDimension { partitionKeys } } }""",
    )
    return data["assetNodes"][0]["partitionKeysByDimension"][0]["partitionKeys"]


def test_up_serves_the_ui_on_loopback_records_the_sample_and_stops_cleanly(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = local_start_environment()
    state = tmp_path / "state"
    env.update(COMPETITION_STATE_DIR=str(state), FILL_SENSOR_INTERVAL_SECONDS="3")
    command = [str(Path(sys.executable).with_name("competition-pipeline")), "up"]
    command += ["--port", str(port), "--hours", "2", "--fills-per-hour", "200", "--rate", "20"]
    command += ["--metrics-port", str(metrics_port)]
    log_path = tmp_path / "up.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        recorded = ranked = 0
        socket_dir = state / "pg"
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                assert graphql(port, "{ version }")["version"]
                with psycopg.connect(
                    host=str(socket_dir), dbname="competition", user="postgres"
                ) as c:
                    recorded = c.execute(
                        "SELECT count(DISTINCT window_start) FROM competition_fill_events"
                    ).fetchone()[0]
                    ranked = c.execute(
                        "SELECT count(*) FROM competition_standings"
                        " WHERE competition_id = 'demo' AND trades > 0"
                    ).fetchone()[0]
            except (OSError, psycopg.Error):
                pass
            # Two sample hours and the open hour, by the running sensor; then the standings.
            if recorded >= 3 and ranked > 0:
                break
            time.sleep(2)
        assert recorded >= 3 and ranked > 0, log_path.read_text()[-4000:]
        # The webserver and the metrics exporter listen on loopback only.
        assert listening_addresses(port) == {"127.0.0.1"}
        assert listening_addresses(metrics_port) == {"127.0.0.1"}
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            scraped = metrics.samples(response.read().decode())
        assert scraped["competition_fill_rows_total"] > 0

        # Partitions begin at the sample's first hour: the two closed hours and the open one.
        keys = partition_keys(port)
        sample = sorted(p.parent.name[5:] + "-" + p.name[5:] for p in state.glob("journal/*/*"))
        assert len(keys) == 3 and keys[0] == f"{sample[0]}:00", (keys, sample)

        # The demo's registered wallets trade in more than one hour.
        with psycopg.connect(host=str(socket_dir), dbname="competition", user="postgres") as c:
            across = c.execute(
                "SELECT count(*) FROM (SELECT f.wallet FROM competition_fill_events f"
                " JOIN competition_participants p ON p.wallet = f.wallet"
                " WHERE p.competition_id = 'demo' GROUP BY f.wallet"
                " HAVING count(DISTINCT f.window_start) >= 2) w"
            ).fetchone()[0]
        assert across >= 2

        # A second shell: no URL in its environment, the CLI finds the running instance.
        assert json.loads((state / "local.json").read_text())["ui"] == f"http://127.0.0.1:{port}"
        listed = cli("competition", "list", env=env)
        assert listed.returncode == 0 and "demo" in listed.stdout, listed
        standings = cli("standings", "demo", "--json", env=env)
        assert standings.returncode == 0, standings
        assert json.loads(standings.stdout)[0]["rank"] == 1
        printed = cli("psql", "--print", env=env)
        assert printed.returncode == 0 and "***" not in printed.stdout
        assert printed.stdout.startswith("psql 'postgresql://postgres@/competition?host=")
        count = cli("psql", "--", "-tAc", "SELECT count(*) FROM competitions", env=env)
        assert count.returncode == 0 and count.stdout.strip() == "1", count
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=90)
    assert code == 0
    # Nothing it started is left (the code server included), the embedded PostgreSQL was stopped
    # with it, and the CLI no longer points at it.
    assert processes_mentioning(str(state)) == []
    assert not (state / "pg" / "postmaster.pid").exists()
    assert not (state / "local.json").exists()
    gone = cli("standings", "demo", env=env)
    assert gone.returncode != 0 and "COMPETITION_DATABASE_URL" in gone.stderr
    assert "bin/start" in gone.stderr
    # Quiet by default: no DEBUG event lines, one INFO line per recorded window from the runs.
    output = log_path.read_text()
    assert " - DEBUG - " not in output
    assert "rows inserted" in output


def _db(state: Path, name: str) -> psycopg.Connection:
    return psycopg.connect(host=str(state / "pg"), dbname=name, user="postgres", connect_timeout=5)


def _following_since(state: Path, since: float) -> str | None:
    """The run that holds the open hour and committed a load after ``since`` (epoch s)."""
    try:
        with _db(state, "competition") as c:
            row = c.execute(
                "SELECT run_id FROM competition_fill_followers WHERE run_id IS NOT NULL"
                " AND heartbeat_at > to_timestamp(%s) AND taken_at > to_timestamp(%s)",
                (since, since),
            ).fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


def _wait_for_closed_runs(state: Path, deadline: float) -> None:
    """Until no run but followers is in flight."""
    while True:
        with _db(state, "dagster") as c:
            busy = c.execute(
                "SELECT count(*) FROM runs WHERE status IN"
                " ('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED')"
                " AND pipeline_name <> 'competition_fill_live_hour_job'"
            ).fetchone()[0]
        if not busy:
            return
        assert time.monotonic() < deadline, "closed windows still in flight"
        time.sleep(0.5)


def test_a_local_start_stopped_with_sigterm_while_following_restarts_fresh_twice(
    tmp_path: Path,
) -> None:
    """The README's stop (SIGTERM to the local start) while the open hour is followed, then a
    start again, twice: each stop ends the follower's run SUCCESS saying why (run tag
    ``competition/stopped``), hands the hour back and prints no traceback; each start has a new
    follower holding the hour within seconds of the first sensor ticks, without waiting out
    FILL_DEAD_RUN_SECONDS (set to 10 minutes here); no run failed, no alert reached the
    webhook, the failures counter stayed 0."""
    # The three starts and stops inside the hour in progress and past the closing hour's lateness:
    # at the hour's turn the sensor asks for the closing hour's follower (it runs through the
    # lateness minute) beside the new hour's, and a stop that catches a run starting (Dagster's
    # interrupt before the step: docs/operations.md, "A stop is not a failure") fails it.
    open_window(at_least=300, settled=90)
    webhook = Webhook(refuse=0)
    port, metrics_port = free_port(), free_port()
    state = tmp_path / "state"
    env = local_start_environment()
    env.update(
        COMPETITION_STATE_DIR=str(state),
        FILL_SENSOR_INTERVAL_SECONDS="3",
        FILL_DEAD_RUN_SECONDS="600",
        ALERT_WEBHOOK_URL=webhook.url,
    )
    command = [str(Path(sys.executable).with_name("competition-pipeline")), "up"]
    command += ["--port", str(port), "--hours", "1", "--fills-per-hour", "100", "--rate", "10"]
    command += ["--metrics-port", str(metrics_port)]
    followers: list[str] = []
    timings: list[tuple[float, float]] = []  # (seconds until following, seconds to stop)
    for start in range(3):
        log_path = tmp_path / f"up-{start}.log"
        started = time.time()
        with log_path.open("w") as log:
            process = subprocess.Popen(
                command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 180
            while (run := _following_since(state, started)) is None:
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
            following = time.time() - started
            followers.append(run)
            # Stopped while only the follower works (a closed window's run caught between its
            # steps may still fail: docs/operations.md, "Stopping").
            _wait_for_closed_runs(state, deadline)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=30) as response:
                scraped = metrics.samples(response.read().decode())
            assert scraped["competition_fill_record_failures_total"] == 0
            # The followers stopped before: SUCCESS, saying why; no run failed.
            with _db(state, "dagster") as c:
                runs = c.execute(
                    "SELECT r.run_id, r.status, t.value FROM runs r LEFT JOIN run_tags t"
                    " ON t.run_id = r.run_id AND t.key = 'competition/stopped'"
                ).fetchall()
            statuses = {run_id: (status, stopped) for run_id, status, stopped in runs}
            assert not [r for r, (status, _) in statuses.items() if status == "FAILURE"], runs
            for stopped_run in followers[:-1]:
                status, stopped = statuses[stopped_run]
                assert status == "SUCCESS" and stopped.startswith("stopped: SIGTERM"), runs
        finally:
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=90)
        timings.append((round(following, 1), round(time.monotonic() - stopping, 1)))
        assert code == 0
        output = log_path.read_text()
        assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]
    print(f"seconds until following, seconds to stop: {timings}")
    assert len(set(followers)) == 3
    assert webhook.received == []
