"""Figure w: a backfill of many windows as runs on Celery worker hosts, with 1 and 2 hosts, beside
the same windows run on the service host itself (``DefaultRunLauncher``), in one bench run.

Each configuration is the soak's (soak.py) without faults and without live appends: a
private PostgreSQL, the code server and the daemon with the journal sensor every 5 s, and for
``celery`` the soak's RabbitMQ node and worker hosts in network namespaces, each ``celery worker
-c 1``. ``--windows`` closed hours of ``--fills-per-hour`` fills are written first; the sensor
requests one run per window (the asset's backfill policy makes a Dagster backfill one run, which
no launcher can spread), the queue admits 4 at a time. Measured: seconds from the processes up
to the table holding every row, and the span from the first run's start to the last run's end.

On a 2-core machine two worker hosts share the cores with the daemon, the code server and
PostgreSQL: this measures the launcher's overhead per run and that the result is exact, not a
speed-up. Needs root (``ip netns``) for the Celery configurations.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg

from competition_harness.keys import journal_keys
from competition_harness.soak import Soak
from competition_pipeline.tools.log import log

CONFIGURATIONS = (("local", 0), ("celery", 1), ("celery", 2))


def _one(topology: str, host_count: int, windows: int, fills_per_hour: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="competition-bench-w-"))
    soak = Soak(workdir, seed=1, faults=(), topology=topology, host_count=max(host_count, 1))
    try:
        soak.setup(windows, fills_per_hour, live=False)
        started = time.monotonic()
        expected = journal_keys(soak.journal)
        stored = soak.wait_for_table(expected, 1800, poll=0.5)
        seconds = time.monotonic() - started
        soak.settle_runs(120, poll=0.5)  # a run whose load committed may still be in its checks
        with psycopg.connect(soak.cluster.url("dagster")) as conn:
            first, last, runs = conn.execute(
                "SELECT min(start_time), max(end_time), count(*) FROM runs WHERE status = 'SUCCESS'"
            ).fetchone()
        return {
            "topology": topology,
            "hosts": host_count,
            "windows": windows,
            "rows": len(expected),
            "exact": stored == expected,
            "seconds_to_complete": round(seconds, 2),
            "runs": runs,
            "run_span_seconds": round(last - first, 2) if first and last else None,
            "runs_by_host": soak.hosts_of_runs(),
        }
    finally:
        soak.close()
        shutil.rmtree(workdir, ignore_errors=True)


def workers_figure(windows: int = 24, fills_per_hour: int = 2000) -> dict:
    results = []
    for topology, host_count in CONFIGURATIONS:
        log(f"w. {windows} windows, {topology} ({host_count} worker hosts)")
        results.append(_one(topology, host_count, windows, fills_per_hour))
    return {"configurations": results, "windows": windows, "fills_per_hour": fills_per_hour}


def w_table(result: dict) -> str:
    lines = [
        f"{'w. ' + str(result['windows']) + ' windows as runs':<34} {'rows':>9} {'complete s':>11}"
        f" {'run span s':>11} {'s/window':>9}  runs by host"
    ]
    for c in result["configurations"]:
        label = (
            "service host (DefaultRunLauncher)"
            if c["topology"] == "local"
            else (f"Celery, {c['hosts']} worker host{'s' if c['hosts'] > 1 else ''}")
        )
        span = c["run_span_seconds"] or 0.0
        hosts = ", ".join(f"{k} {v}" for k, v in sorted(c["runs_by_host"].items()))
        lines.append(
            f"{'   ' + label:<34} {c['rows']:>9,} {c['seconds_to_complete']:>11.1f}"
            f" {span:>11.1f} {span / c['windows']:>9.2f}  {hosts}"
            + ("" if c["exact"] else "  NOT EXACT")
        )
    return "\n".join(lines)
