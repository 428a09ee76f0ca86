"""Figure i: following the open hour live, on the local start's own processes.

``competition-pipeline up`` (what ``bin/start`` runs: embedded PostgreSQL, ``dagster dev`` with
its daemon and code server, PostgreSQL instance storage, the simulator) is started in a temporary
state directory with the simulator appending ``--live-rate`` fills a second to the open hour. After
a warm-up, for ``--live-seconds``:

* the lag of every fill of the measurement from its append (the simulator stamps a fill with the
  time it appends it, within its 50 ms tick) to its commit (``recorded_at``, the recording
  transaction's start, so the commit is a few ms later): p50, p95, p99, max;
* the standings lag: from a fill's append (a fill of a ``demo`` wallet) to when the bench first
  saw standings of ``demo`` computed after its commit (``computed_at``, polled every 0.25 s);
* runs and event-log rows written per hour (instance storage), and the CPU seconds a minute of
  the run workers and of the whole ``dagster dev`` tree (``/proc``; a reaped child's time is in
  its parent's ``cutime``).

``--live-code DIR`` runs another checkout's code (the figure before a change) with this harness.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from competition_pipeline.tools.log import log
from competition_pipeline.tools.ports import free_port

_TICKS = os.sysconf("SC_CLK_TCK")
#: Variables of the caller that would point the local start at other databases or a journal.
_CLEARED = (
    "COMPETITION_DATABASE_URL",
    "DAGSTER_POSTGRES_URL",
    "FILL_JOURNAL_DIR",
    "DAGSTER_HOME",
    "FILL_PARTITIONS_START",
    "COMPETITION_STATE_DIR",
)


def _proc_tree(root: int) -> dict[int, tuple[str, int, int]]:
    """Every live process under ``root``: pid -> (command line, own ticks, reaped children's)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        own = int(fields[11]) + int(fields[12])
        reaped = int(fields[13]) + int(fields[14])
        children.setdefault(ppid, []).append(int(entry))
        stats[int(entry)] = (cmdline, own, reaped)
    tree: dict[int, tuple[str, int, int]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            tree[pid] = stats[pid]
            todo.extend(children.get(pid, []))
    return tree


def _is_run_worker(cmdline: str) -> bool:
    """A run's process: ``dagster api execute_run``, or the code server's spawned child."""
    return "execute_run" in cmdline or "spawn_main" in cmdline


def _cpu(root: int) -> dict[str, float]:
    """CPU seconds so far: the whole tree (own + reaped children), and the run workers (live ones
    with their children, plus what the code servers and daemon reaped of workers that ended)."""
    tree = _proc_tree(root)
    total = sum(own + reaped for _, own, reaped in tree.values())
    workers = 0
    for cmdline, own, reaped in tree.values():
        if _is_run_worker(cmdline):
            workers += own + reaped
        elif "grpc" in cmdline or "code-server" in cmdline or "dagster-daemon" in cmdline:
            workers += reaped  # run workers that ended, reaped by the process that launched them
    return {"tree": total / _TICKS, "run_workers": workers / _TICKS}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1],
    }


def _wait_for_state(state: Path, process: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local start exited with {process.returncode}")
        try:
            return json.loads((state / "local.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.5)
    raise RuntimeError("the local start did not write local.json in time")


def _commits(url: str, start: dt.datetime, end: dt.datetime) -> list[float]:
    """Per fill appended in ``[start, end)``: seconds from its append to its first commit."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM min(recorded_at) - fill_ts)::float8"
            " FROM competition_fill_events WHERE fill_ts >= %s AND fill_ts < %s"
            " GROUP BY trade_id, fill_ts",
            (start, end),
        ).fetchall()
    return [r[0] for r in rows]


def _fill_commits(url: str, start: dt.datetime, end: dt.datetime) -> list[tuple[float, float]]:
    """(append, commit) epoch seconds of each fill of a ``demo`` wallet in ``[start, end)``."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT extract(epoch FROM e.fill_ts)::float8,"
            " extract(epoch FROM min(e.recorded_at))::float8"
            " FROM competition_fill_events e JOIN competition_participants p"
            "   ON p.wallet = e.wallet AND p.competition_id = 'demo'"
            " WHERE e.fill_ts >= %s AND e.fill_ts < %s AND NOT e.is_self_trade"
            " GROUP BY e.trade_id, e.fill_ts",
            (start, end),
        ).fetchall()


def _standings_lags(
    fills: list[tuple[float, float]], computations: list[tuple[float, float]]
) -> list[float]:
    """Per fill: from its append to the first computation whose snapshot followed its commit."""
    lags = []
    for appended, committed in fills:
        seen = [visible for snapshot, visible in computations if snapshot >= committed]
        if seen:
            lags.append(min(seen) - appended)
    return lags


def _instance_counts(dagster_url: str, start: float, end: float) -> dict[str, int]:
    with psycopg.connect(dagster_url, autocommit=True) as conn:
        (runs,) = conn.execute(
            "SELECT count(*) FROM runs WHERE create_timestamp >= to_timestamp(%s) AT TIME ZONE"
            " 'UTC' AND create_timestamp < to_timestamp(%s) AT TIME ZONE 'UTC'",
            (start, end),
        ).fetchone()
        (events,) = conn.execute(
            "SELECT count(*) FROM event_logs WHERE timestamp >= to_timestamp(%s) AT TIME ZONE"
            " 'UTC' AND timestamp < to_timestamp(%s) AT TIME ZONE 'UTC'",
            (start, end),
        ).fetchone()
    return {"runs": runs, "event_rows": events}


class _StandingsPoller:
    """Polls when the ``demo`` standings were computed (``computed_at``: the computing
    transaction's start, so every fill committed before it is counted): (snapshot, first seen)
    of each computation, whoever computed it (a standings run, or the follower)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.seen: dict[float, float] = {}

    def poll(self) -> None:
        row = self.conn.execute(
            "SELECT extract(epoch FROM max(computed_at))::float8 FROM competition_standings"
            " WHERE competition_id = 'demo'"
        ).fetchone()
        if row and row[0] is not None and row[0] not in self.seen:
            self.seen[row[0]] = time.time()

    def computations(self) -> list[tuple[float, float]]:
        return sorted(self.seen.items())


def live_follow(
    *,
    seconds: float,
    rate: float,
    warmup: float,
    code: Path | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """Figure i: ``up`` with the simulator at ``rate`` fills/s, measured for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="bench-i-") as tmp:
        state = Path(tmp) / "state"
        environ = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        environ.update(env or {})
        environ["COMPETITION_STATE_DIR"] = str(state)
        if code is not None:
            environ["PYTHONPATH"] = str(code.resolve())
        command = [
            sys.executable,
            "-m",
            "competition_pipeline.tools.cli",
            "up",
            "--port",
            str(free_port()),
            "--metrics-port",
            "0",
            "--rate",
            str(rate),
            "--hours",
            "1",
            "--fills-per-hour",
            "2000",
        ]
        log(f"i. starting the local start ({'code ' + str(code) if code else 'this checkout'})")
        output = open(Path(tmp) / "up.log", "wb")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(command, env=environ, stdout=output, stderr=subprocess.STDOUT)
        try:
            local = _wait_for_state(state, process)
            url, dagster_url = local["competition_database_url"], local["dagster_postgres_url"]
            poller = None
            log(f"i. warming up {warmup:.0f}s")
            deadline = time.monotonic() + warmup
            while time.monotonic() < deadline:
                time.sleep(1)
                if poller is None:
                    try:
                        poller = _StandingsPoller(url)
                    except psycopg.Error:
                        continue
            start = time.time()
            cpu_start = _cpu(process.pid)
            log(f"i. measuring {seconds:.0f}s")
            end_at = start + seconds
            while time.time() < end_at:
                if poller is not None:
                    poller.poll()
                time.sleep(0.25)
            end = time.time()
            cpu_end = _cpu(process.pid)
            log("i. letting the last fills of the measurement be recorded (60 s)")
            settle = time.time() + 60
            while time.time() < settle:
                if poller is not None:
                    poller.poll()
                time.sleep(0.25)
            start_dt = dt.datetime.fromtimestamp(start, dt.UTC)
            end_dt = dt.datetime.fromtimestamp(end, dt.UTC)
            lags = _commits(url, start_dt, end_dt)
            fills = _fill_commits(url, start_dt, end_dt)
            computations = poller.computations() if poller is not None else []
            counts = _instance_counts(dagster_url, start, end)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
            output.close()
        minutes = (end - start) / 60
        per_hour = 3600 / (end - start)
        return {
            "path": "competition-pipeline up: dagster dev (daemon, code server), PostgreSQL"
            " instance storage, simulator",
            "code": str(code) if code else "this checkout",
            "env": env or {},
            "seconds": round(end - start, 1),
            "rate": rate,
            "fills_expected": int(rate * (end - start)),
            "crosses_hour": start_dt.hour != end_dt.hour,
            "commit_lag_seconds": _percentiles(lags),
            "standings_lag_seconds": _percentiles(_standings_lags(fills, computations)),
            "standings_fills": len(fills),
            "standings_computations": len(computations),
            "runs_per_hour": round(counts["runs"] * per_hour, 1),
            "event_rows_per_hour": round(counts["event_rows"] * per_hour),
            "cpu_seconds_per_minute": {
                k: round((cpu_end[k] - cpu_start[k]) / minutes, 2) for k in cpu_start
            },
        }


def i_table(result: dict) -> str:
    lag, standings = result["commit_lag_seconds"], result["standings_lag_seconds"]

    def row(name: str, p: dict) -> str:
        if not p.get("count"):
            return f"{name:<30} no fills"
        return (
            f"{name:<30} {p['count']:>7,} {p['p50']:>7.2f} {p['p95']:>7.2f} {p['p99']:>7.2f}"
            f" {p['max']:>7.2f}"
        )

    cpu = result["cpu_seconds_per_minute"]
    return "\n".join(
        [
            f"i. following the open hour ({result['code']}, {result['rate']:g} fills/s,"
            f" {result['seconds']:.0f} s{', crosses an hour' if result['crosses_hour'] else ''})",
            f"{'lag (s)':<30} {'fills':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}",
            row("append -> commit", lag),
            row("append -> standings", standings),
            f"runs/hour {result['runs_per_hour']:g}   event-log rows/hour"
            f" {result['event_rows_per_hour']:,}   CPU s/min: run workers"
            f" {cpu['run_workers']:.2f}, dagster dev tree {cpu['tree']:.2f}",
        ]
    )
