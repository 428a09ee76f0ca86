"""``dagster dev`` (webserver + daemon) on a test's PostgreSQL instance storage, shared by the
end-to-end and browser tests: start it, talk GraphQL to it, wait for outcomes, read the answer
back from the table and from the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.rows import fill_rows, named
from competition_pipeline.fills.windows import Window
from competition_pipeline.tools.ports import free_port
from tests.helpers.environment import REPO
from tests.helpers.sql import query

SENSOR_INTERVAL = 10

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions runs(limit: 100) { runId status } }
  }
}"""
EXECUTIONS = """
query Executions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 100) {
    runId status partition
  }
}"""
LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      status
      eventConnection {
        events { __typename ... on ExecutionStepFailureEvent { error { message } } }
      }
    }
  }
}"""


#: What the local start (``competition-pipeline up``) sets for itself when it is not given.
LOCAL_START_VARIABLES = (
    "COMPETITION_DATABASE_URL",
    "DAGSTER_POSTGRES_URL",
    "DAGSTER_HOME",
    "FILL_JOURNAL_DIR",
    "FILL_PARTITIONS_START",
)


def local_start_environment() -> dict[str, str]:
    """This process's environment without what would steer the local start elsewhere."""
    return {k: v for k, v in os.environ.items() if k not in LOCAL_START_VARIABLES}


class DagsterDev:
    def __init__(self, port: int, process: subprocess.Popen, log: Path) -> None:
        self.port, self.process, self.log = port, process, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """The answer's data; an answer with errors fails the test."""
        payload = post_graphql(self.port, query, variables)
        assert "errors" not in payload, payload
        return payload["data"]


def post_graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """The whole answer (data and any errors) of the Dagster webserver on ``port``."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def graphql(port: int, query: str) -> dict:
    """The answer's data, errors or not (the local start's webserver, before it is ready)."""
    return post_graphql(port, query)["data"]


def dagster_dev_env(database_url: str, journal: Path, *, sensor_running: bool) -> dict[str, str]:
    """The code location's environment for a test: its database and journal, a short interval."""
    return {
        "COMPETITION_DATABASE_URL": database_url,
        "FILL_JOURNAL_DIR": str(journal),
        "FILL_SENSOR_DEFAULT_STATUS": "running" if sensor_running else "stopped",
        "FILL_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL),
    }


def dagster_dev_command(port: int) -> list[str]:
    """What ``bin/start`` runs: ``dagster dev`` on the repository's ``workspace.yaml``."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    return [dagster, "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")]


def dg_dev_command(port: int) -> list[str]:
    """Dagster's project CLI: ``dg dev`` in the repository finds the code location through
    ``[tool.dg]`` in pyproject.toml (no workspace file)."""
    dg = str(Path(sys.executable).with_name("dg"))
    return [dg, "dev", "-h", "127.0.0.1", "-p", str(port)]


@contextmanager
def run_dagster_dev(
    env: Mapping[str, str],
    log: Path,
    command: Callable[[int], list[str]] = dagster_dev_command,
) -> Iterator[DagsterDev]:
    """``dagster dev`` (or ``command(port)``) with ``os.environ`` plus ``env``, once its GraphQL
    answers; its whole process group (webserver, daemon, code server, runs) is stopped on exit."""
    port = free_port()
    command = command(port)
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(port, process, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                dev.graphql("{ version }")
                break
            except OSError:
                if time.monotonic() > deadline:
                    tail = log.read_text()[-3000:]
                    raise AssertionError(f"dagster dev did not answer:\n{tail}") from None
                time.sleep(1)
        yield dev
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def stored_keys(database_url: str) -> set[tuple[int, str]]:
    return set(query(database_url, "SELECT trade_id, wallet FROM competition_fill_events"))


def journal_keys(journal: Path, windows: list[Window]) -> set[tuple[int, str]]:
    """The answer computed straight from the journal files: every valid fill's wallet rows."""
    keys = set()
    for window in windows:
        directory = journal / f"date={window.start:%Y-%m-%d}" / f"hour={window.start:%H}"
        for path in sorted(directory.glob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                result = parse_line(line)
                if type(result) is Fill and window.contains_ms(result.timestamp_ms):
                    keys.update(
                        (r.trade_id, r.wallet) for r in map(named, fill_rows(result, 0, "", 0))
                    )
    return keys


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, dev: DagsterDev) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{dev.log.read_text()[-4000:]}")
        time.sleep(0.5)
