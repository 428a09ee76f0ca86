"""What the figures share: the bench window, its databases, the Dagster instance on PostgreSQL,
and the recording in a child process (figures b, c, g)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import record_window
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import embedded
from competition_pipeline.tools.log import log

BENCH_WINDOW = Window.from_key("2026-11-20-03:00")


def child_record(url: str, journal: str, window: Window = BENCH_WINDOW) -> None:
    """Runs in a child process, so that its peak RSS is the recording's own."""
    report = record_window(JournalSource(journal), CompetitionStore(url), window)
    print(json.dumps({"report": report.as_dict(), "peak_rss_mib": _peak_rss_mib()}))


def _peak_rss_mib() -> float:
    """This process image's peak RSS (VmHWM): unlike ru_maxrss, it does not carry over the
    forking parent's memory across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record_in_child(
    url: str,
    journal: Path,
    what: str,
    window: Window = BENCH_WINDOW,
    code: Path | None = None,
) -> dict:
    """Record ``window`` in a child process (its own peak RSS); ``code``: another checkout's
    package on the child's path (a figure's "before", measured in the same run)."""
    command = [
        sys.executable,
        "-m",
        "competition_pipeline.tools.cli",
        "bench",
        "--child",
        url,
        str(journal),
    ]
    command += [window.key]
    started = time.perf_counter()
    # Another checkout's package first on the path: its directory is the child's working
    # directory too (``-m`` puts that first, before PYTHONPATH).
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=code
    ) as child:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                log(f"{what}: still recording ({time.perf_counter() - started:.0f}s)")
    if child.returncode != 0:
        raise RuntimeError(f"recording failed: {dburl.scrub(stderr[-2000:], url)}")
    result = json.loads(stdout.strip().splitlines()[-1])
    report = result["report"]
    rows = report["rows_inserted"] + report["rows_already_present"]
    return {
        "rows": rows,
        "rows_inserted": report["rows_inserted"],
        "seconds": report["seconds"],
        "rows_per_second": rows / report["seconds"],
        "peak_rss_mib": result["peak_rss_mib"],
    }


_INSTANCE_YAML = """
run_storage:
  module: competition_pipeline.instance_storage
  class: RunStorage
  config: {postgres_url: {env: DAGSTER_POSTGRES_URL}}
event_log_storage:
  module: competition_pipeline.instance_storage
  class: EventLogStorage
  config: {postgres_url: {env: DAGSTER_POSTGRES_URL}}
schedule_storage:
  module: competition_pipeline.instance_storage
  class: ScheduleStorage
  config: {postgres_url: {env: DAGSTER_POSTGRES_URL}}
telemetry: {enabled: false}
"""


class Databases:
    """Fresh databases on the bench's server, dropped at the end."""

    def __init__(self, admin: str) -> None:
        self.admin, self.names = admin, []

    def new(self, purpose: str) -> str:
        name = f"competition_bench_{purpose}_{uuid.uuid4().hex[:8]}"
        embedded.create_database(self.admin, name)
        self.names.append(name)
        return embedded.database_url(self.admin, name)

    def drop(self) -> None:
        for name in self.names:
            embedded.drop_database(self.admin, name)


def dagster_home(directory: Path) -> Path:
    """A DAGSTER_HOME whose storage is PostgreSQL at DAGSTER_POSTGRES_URL, as deployed."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dagster.yaml").write_text(_INSTANCE_YAML)
    return directory


def postgres_instance(home: Path, instance_url: str):  # noqa: ANN202 (a DagsterInstance)
    import dagster as dg

    os.environ["DAGSTER_POSTGRES_URL"] = instance_url
    try:
        return dg.DagsterInstance.from_config(str(home))
    finally:
        del os.environ["DAGSTER_POSTGRES_URL"]
