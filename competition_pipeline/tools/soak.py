"""The chaos soak: the real processes, faults at random, then no manual step: does the table
converge to the journal by itself?

``competition-pipeline soak --duration 1800 --seed 7`` starts, all on this machine:

* a private PostgreSQL cluster (its own data directory and port; the soak stops and starts it)
  holding the Dagster instance (``dagster``) and the competition tables (``competition``);
* the code location as its own gRPC server and ``dagster-daemon run`` with the project's own
  ``dagster.yaml``, the journal sensor running every few seconds;
* the engine simulator: a few closed sample hours, then fills appended live to the open hour.

For ``--duration`` seconds it injects faults at random (``--faults`` to choose): a run worker
``kill -9``; the database stopped for longer than the retry budget, with a late segment filed
into a closed hour meanwhile; the daemon ``kill -9`` and restarted; the code server ``kill -9``
with a run in flight and restarted; a late segment into a closed hour; a corrupt closed segment,
repaired (rewritten whole) a little later. Then it stops the faults and the simulator and waits,
touching nothing, until the table equals the journal or ``--timeout`` passes. The expected rows
come from its own reading of the journal files (every valid fill's wallet rows). It prints the
faults by kind, windows, rows expected, recorded, missing, extra and seconds to converge, and
exits non-zero unless missing = extra = 0.

PostgreSQL's binaries are the machine's (``pg_ctl`` on PATH, or Debian's
``/usr/lib/postgresql/*/bin``) or, where there are none, the embedded PostgreSQL's. As root the
cluster runs as user ``postgres`` (created if missing), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.journal import scan, window_dir
from competition_pipeline.fills.rows import fill_rows
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.follow import FOLLOW_TAG
from competition_pipeline.store.database import CompetitionStore, StoreError
from competition_pipeline.tools import embedded, simulate
from competition_pipeline.tools.log import log as _log
from competition_pipeline.tools.ports import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAULTS = ("kill-run", "db-stop", "kill-daemon", "kill-code-server", "late-segment", "corrupt")


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are (``embedded.postgres_bindir``), or SystemExit."""
    bindir = embedded.postgres_bindir("initdb")
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries found (set PG_BINDIR to the directory of initdb)")
    return bindir


@dataclass
class Cluster:
    """A private PostgreSQL cluster on 127.0.0.1:``port``, stopped and started at will."""

    bindir: Path
    data: Path
    port: int
    user: str | None = None  # run as this user (PostgreSQL refuses root)

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> None:
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.user], check=True)
            owner = pwd.getpwnam(self.user)
            self.data.mkdir(parents=True, exist_ok=True)
            for path in (self.data.parent, self.data):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            for path in self.data.parents:  # the cluster's user must reach its directory
                if path == Path(tempfile.gettempdir()) or path == Path("/"):
                    break
                os.chmod(path, os.stat(path).st_mode | 0o711)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for name in ("dagster", "competition"):
                conn.execute(f"CREATE DATABASE {name}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            " -c fsync=off -c max_connections=200"
        )
        log = self.data.parent / "postgres.log"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class Process:
    """A Dagster process in its own session, started again after a kill."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill9(self, *, group: bool = True) -> None:
        """SIGKILL the process (and, with ``group``, everything it started)."""
        assert self.popen is not None
        try:
            if group:
                os.killpg(self.popen.pid, signal.SIGKILL)
            else:
                os.kill(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_workers(dagster_home: Path) -> list[int]:
    """PIDs of the run workers of the instance at ``dagster_home`` (never another instance's on
    the same machine): the code server's spawned children, or ``dagster api execute_run``."""
    marker = f"DAGSTER_HOME={dagster_home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            # The code server starts each run in a spawned multiprocessing child.
            if b"spawn_main" not in cmdline and b"execute_run" not in cmdline:
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def expected_keys(journal: Path) -> tuple[set[tuple[int, str]], int]:
    """Every valid fill's wallet rows, read straight from the segments (plain and gzip); and the
    number of hour windows. A corrupt segment contributes nothing (its window cannot be read)."""
    keys: set[tuple[int, str]] = set()
    states, _ = scan(journal)
    for state in states:
        window_keys: set[tuple[int, str]] = set()
        try:
            for segment in state.segments:
                data = segment.path.read_bytes()
                if segment.closed:
                    data = gzip.decompress(data)
                for line in data.split(b"\n"):
                    result = parse_line(line)
                    if type(result) is Fill and state.window.contains_ms(result.timestamp_ms):
                        window_keys.update((r[3], r[4]) for r in fill_rows(result, 0, "", 0))
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        keys |= window_keys
    return keys, len(states)


def stored_keys(url: str) -> set[tuple[int, str]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass('competition_fill_events')").fetchone()[0]
        if exists is None:
            return set()
        return set(conn.execute("SELECT trade_id, wallet FROM competition_fill_events"))


@dataclass
class Soak:
    workdir: Path
    seed: int
    faults: tuple[str, ...]
    injected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.journal = self.workdir / "journal"
        self.cluster = Cluster(postgres_bindir(), self.workdir / "pg" / "data", free_port())
        self.sim = simulate.FillSimulator(seed=self.seed)
        self.late_trade_id = 9_000_000_000_000 + self.seed * 1_000_000
        self.repairs: list[threading.Thread] = []
        self.stop_sim = threading.Event()
        self.home = self.workdir / "dagster_home"

    # -- setting up --------------------------------------------------------------------------

    def setup(self, sample_hours: int, fills_per_hour: int) -> None:
        self.cluster.init()
        now = Window.containing_ms(time.time_ns() // 1_000_000)
        self.closed = [Window(now.start - back * HOUR) for back in range(sample_hours, 0, -1)]
        for window in self.closed:
            simulate.write_hour(self.journal, window, fills_per_hour, sim=self.sim)
        home = self.home = self.workdir / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        grpc_port = free_port()
        workspace = self.workdir / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {grpc_port}\n      location_name: competition_pipeline\n"
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": self.cluster.url("dagster"),
            "COMPETITION_DATABASE_URL": self.cluster.url("competition"),
            "FILL_JOURNAL_DIR": str(self.journal),
            "FILL_PARTITIONS_START": self.closed[0].key,
            "FILL_SENSOR_DEFAULT_STATUS": "running",
            "FILL_SENSOR_INTERVAL_SECONDS": "5",
            "FILL_RETRY_MAX": "2",
            "FILL_RETRY_DELAY_SECONDS": "2",
            "FILL_DEAD_RUN_SECONDS": "30",
            "FILL_RETRY_BACKOFF_SECONDS": "5",
            "FILL_RETRY_BACKOFF_MAX_SECONDS": "40",
        }
        log = self.workdir / "dagster.log"
        self.code_server = Process(
            "code server",
            [str(BIN / "dagster"), "api", "grpc", "-m", "competition_pipeline.definitions"]
            + ["-h", "127.0.0.1", "-p", str(grpc_port)],
            env,
            log,
        )
        self.daemon = Process(
            "daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, log
        )
        self.grpc_port = grpc_port
        self.code_server.start()
        self._wait_for_code_server()
        self.daemon.start()
        self.sim_thread = threading.Thread(
            target=simulate.append_live,
            kwargs={"root": self.journal, "rate_per_second": 20, "stop": self.stop_sim},
            name="simulator",
            daemon=True,
        )
        self.sim_thread.start()

    def _wait_for_code_server(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the code server did not start") from None
                time.sleep(0.5)

    # -- faults ------------------------------------------------------------------------------

    def inject(self, kind: str) -> None:
        _log(f"fault: {kind}")
        if getattr(self, "_" + kind.replace("-", "_"))() is not False:
            self.injected[kind] += 1

    def _wait_for_run_worker(self, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while not (pids := run_workers(self.home)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return pids

    def _kill_run(self) -> bool:
        """False (not counted) when no run was in flight to kill within a minute."""
        pids = self._wait_for_run_worker()
        if not pids:
            _log("no run in flight to kill")
            return False
        os.kill(pids[0], signal.SIGKILL)
        return True

    def _db_stop(self) -> None:
        self.cluster.stop()
        self._late_segment(count=False)  # the engine goes on filing late fills meanwhile
        time.sleep(self.random.uniform(15, 25))  # longer than the retry budget (2 x 2 s, exp)
        self.cluster.start()

    def _kill_daemon(self) -> None:
        self.daemon.kill9()
        time.sleep(2)
        self.daemon.start()

    def _kill_code_server(self) -> None:
        self._wait_for_run_worker()
        self.code_server.kill9(group=False)  # its run workers are orphaned, not killed
        time.sleep(2)
        self.code_server.start()
        self._wait_for_code_server()

    def _late_segment(self, *, count: bool = True) -> None:
        window = self.random.choice(self.closed)
        directory = window_dir(self.journal, window)
        name = f"seg-late-{time.time_ns()}.jsonl"
        lines = []
        for i in range(self.random.randint(1, 20)):
            self.late_trade_id += 1
            stamp = window.start_ms + self.random.randrange(3_600_000)
            lines.append(_late_fill(self.late_trade_id, stamp, i))
        (directory / name).write_text("".join(lines))
        if not count:
            self.injected["late-segment (db down)"] += 1

    def _corrupt(self) -> None:
        """A closed segment that is not gzip: its window fails (no retry helps) until the engine
        rewrites the file; the soak repairs it after a while, from another thread."""
        window = self.random.choice(self.closed)
        path = window_dir(self.journal, window) / f"seg-corrupt-{time.time_ns()}.jsonl.gz"
        path.write_bytes(b"\x1f\x8b this is not gzip")
        self.late_trade_id += 1
        good = _late_fill(self.late_trade_id, window.start_ms + 1, 0).encode()

        def repair() -> None:
            time.sleep(self.random.uniform(30, 50))
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(gzip.compress(good))
            os.replace(tmp, path)
            _log(f"repaired {path.name}")

        thread = threading.Thread(target=repair, daemon=True)
        thread.start()
        self.repairs.append(thread)

    # -- the run -----------------------------------------------------------------------------

    def run(self, duration: float, timeout: float, max_faults: int | None = None) -> dict:
        plan = list(self.faults)
        self.random.shuffle(plan)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and sum(self.injected[f] for f in FAULTS) != max_faults:
            time.sleep(self.random.uniform(5, 12))
            if time.monotonic() >= deadline:
                break
            kind = plan.pop() if plan else self.random.choice(self.faults)
            self.inject(kind)
        _log("faults stopped; stopping the simulator and waiting, touching nothing")
        self.stop_sim.set()
        self.sim_thread.join(timeout=30)
        for repair in self.repairs:  # the engine's rewrite of a corrupt segment is not ours
            repair.join()
        cleared = time.monotonic()
        expected, windows = expected_keys(self.journal)
        while True:
            try:
                stored = stored_keys(self.cluster.url("competition"))
            except psycopg.Error:
                stored = set()
            missing, extra = len(expected - stored), len(stored - expected)
            waited = time.monotonic() - cleared
            if (missing == 0 and extra == 0) or waited > timeout:
                break
            time.sleep(3)
        runs = self._runs_by_status()
        settle = time.monotonic() + 90  # the runs in flight when it converged end on their own
        while set(runs) & {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}:
            if time.monotonic() > settle:
                break
            time.sleep(3)
            runs = self._runs_by_status()
        return {
            "runs": runs,
            "faults": dict(self.injected),
            "windows": windows,
            "rows_expected": len(expected),
            "rows_recorded": len(stored),
            "missing": missing,
            "extra": extra,
            "seconds_to_converge": round(waited, 1) if missing == extra == 0 else None,
            "converged": missing == 0 and extra == 0,
        }

    def _runs_by_status(self) -> dict[str, int]:
        """The instance's runs by status at the end (none may be left QUEUED or STARTED). The
        open hour's follower runs until its hour is closed past its lateness: a STARTED follower
        whose worker holds its liveness lock is counted FOLLOWING (alive), one that does not
        stays STARTED (a dead run the sensor has not replaced)."""
        try:
            with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
                runs = conn.execute(
                    "SELECT r.run_id, r.status, t.value IS NOT NULL FROM runs r"
                    " LEFT JOIN run_tags t ON t.run_id = r.run_id AND t.key = %s",
                    (FOLLOW_TAG,),
                ).fetchall()
            followers = [run_id for run_id, status, follows in runs if follows]
            store = CompetitionStore(self.cluster.url("competition"), connect_timeout=5)
            alive = store.runs_holding_lock(followers) if followers else set()
        except (psycopg.Error, StoreError):
            return {}
        return dict(
            Counter(
                "FOLLOWING" if status == "STARTED" and run_id in alive else status
                for run_id, status, _ in runs
            )
        )

    def close(self) -> None:
        self.stop_sim.set()
        for process in (getattr(self, "daemon", None), getattr(self, "code_server", None)):
            if process is not None:
                process.stop()
        for pid in run_workers(self.home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.cluster.stop()
        except subprocess.CalledProcessError:
            pass


def _late_fill(trade_id: int, timestamp_ms: int, i: int) -> str:
    taker = f"0x{(trade_id * 7919) % 16**40:040x}"
    maker = f"0x{(trade_id * 104729 + 1) % 16**40:040x}"
    message = {
        "type": "OrderFilled",
        "fill": {
            "trade_id": trade_id,
            "taker_order_id": trade_id,
            "maker_order_id": trade_id + 1,
            "symbol": "BTC-PERP",
            "price": f"{100 + i}.5",
            "size": "0.1",
            "fee": "0.01",
            "taker_side": "Buy",
            "taker_wallet_address": taker,
            "maker_wallet_address": maker,
            "is_taker": True,
            "timestamp": timestamp_ms,
            "builder_code_address": None,
            "builder_code_fee": None,
            "source": {"type": "orderbook"},
            "taker_realized_pnl": None,
            "maker_realized_pnl": None,
            "underlying_notional": None,
        },
    }
    return json.dumps(message) + "\n"


def render(result: dict) -> str:
    rows = [
        ("faults injected", ", ".join(f"{k} x{v}" for k, v in sorted(result["faults"].items())))
    ]
    for key in ("windows", "rows_expected", "rows_recorded", "missing", "extra"):
        rows.append((key.replace("_", " "), str(result[key])))
    seconds = result["seconds_to_converge"]
    rows.append(("seconds to converge", "did not converge" if seconds is None else str(seconds)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        args.error(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="competition-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(workdir, args.seed, faults)
    try:
        _log(f"setting up in {workdir}")
        soak.setup(args.hours, args.fills_per_hour)
        result = soak.run(args.duration, args.timeout, args.max_faults)
    finally:
        soak.close()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not args.workdir and result["converged"]:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result["converged"] else 1
