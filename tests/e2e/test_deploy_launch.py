"""A deploy's gap at the run launch: a code server told to stop keeps serving until its runs end,
but refuses to start new ones. The project's launcher (``defs/grpc_launcher.py``, the
``run_launcher`` of dagster.yaml) makes that refusal a retry of the run queue, so the run waits
QUEUED and starts on the next server instead of ending FAILURE. Real processes throughout: two
``dagster api grpc`` servers one after the other on one port, ``dagster-daemon`` with the
project's dagster.yaml on PostgreSQL instance storage, runs submitted by ``dagster job launch``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from competition_pipeline.tools.ports import free_port
from competition_pipeline.tools.processes import sigint_at_default
from tests.helpers.environment import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
JOBS = REPO / "tests" / "helpers" / "launch_jobs.py"


def until(condition: Callable[[], object], what: str, log: Path, timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    return value


def test_a_run_requested_while_the_code_server_shuts_down_starts_on_the_next_one(
    dagster_home: Path, tmp_path: Path
) -> None:
    port = free_port()
    release = tmp_path / "release"
    log = tmp_path / "processes.log"
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {port}\n      location_name: launch_jobs\n"
    )
    env = {**os.environ, "LAUNCH_TEST_RELEASE": str(release)}
    server_command = [str(BIN / "dagster"), "api", "grpc", "-f", str(JOBS)]
    server_command += ["-h", "127.0.0.1", "-p", str(port)]

    def start(command: list[str]) -> subprocess.Popen:
        # SIGINT at its default, as under systemd: a Dagster process maps SIGTERM to SIGINT's
        # handler, and a shell that started the tests in the background leaves SIGINT ignored.
        with log.open("a") as out:
            return subprocess.Popen(
                command,
                env=env,
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=sigint_at_default,  # noqa: PLW1509
            )

    def launch(job: str) -> str:
        before = {run.run_id for run in instance.get_runs()}
        subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-j", job, "-w", str(workspace)],
            env=env,
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=120,
        )
        (run,) = [run for run in instance.get_runs() if run.run_id not in before]
        return run.run_id

    def status(run_id: str) -> dg.DagsterRunStatus:
        return instance.get_run_by_id(run_id).status

    def logged(run_id: str, text: str) -> bool:
        return any(text in (entry.message or "") for entry in instance.all_logs(run_id))

    servers = [start(server_command)]
    daemon = None
    with dg.DagsterInstance.get() as instance:
        try:
            until(lambda: "Started Dagster code server" in log.read_text(), "server A", log)
            daemon = start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
            held = launch("hold")
            until(lambda: status(held) == dg.DagsterRunStatus.STARTED, "hold started", log)

            # The deploy: server A is told to stop; it waits for `hold` and refuses new runs.
            # (It handles the signal within milliseconds; `dagster job launch` takes seconds. It
            # logs nothing until `hold` ends: the re-submit event below is the proof.)
            servers[0].send_signal(signal.SIGTERM)
            refused = launch("quick")
            until(
                lambda: logged(refused, "re-submitting the run into the queue"),
                "the refused launch is queued again",
                log,
            )
            assert status(refused) in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING)
            (resubmitted,) = [
                entry.dagster_event.engine_event_data.error
                for entry in instance.all_logs(refused)
                if "re-submitting" in (entry.message or "")
            ]
            assert "the code server is shutting down" in resubmitted.message
            assert servers[0].poll() is None  # A still serves `hold`

            # `hold` ends, server A exits, server B comes up on the same port.
            release.touch()
            servers[0].wait(timeout=120)
            servers.append(start(server_command))
            until(
                lambda: instance.get_run_by_id(refused).is_finished,
                "the refused run ends",
                log,
                180,
            )
            assert status(refused) == dg.DagsterRunStatus.SUCCESS, log.read_text()[-4000:]
            assert status(held) == dg.DagsterRunStatus.SUCCESS
        finally:
            for process in [daemon, *servers]:
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
