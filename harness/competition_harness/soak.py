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
repaired (rewritten whole) a little later; the code server's or the daemon's process group
SIGTERM (a deploy, a restart: an ordinary stop, which must fail no run) and started again.
Then it stops the faults and the simulator and waits, touching nothing, until the table equals the
journal or ``--timeout`` passes. The expected rows come from its own reading of the journal files
(every valid fill's wallet rows). It prints the faults by kind, windows, rows expected, recorded,
missing, extra and seconds to converge, and
exits non-zero unless missing = extra = 0.

``--topology celery`` runs the runs elsewhere: the service host (daemon, code server) stays here
with ``docs/examples/dagster.celery.yaml`` (``CeleryRunLauncher``), and ``--hosts`` worker hosts
(default 2), each a network namespace of its own on a bridge (:mod:`hosts`) running ``celery -A
dagster_celery.app worker`` with its own hostname and ``DAGSTER_HOME``
(``docs/examples/dagster.celery-worker.yaml``). The cluster and a RabbitMQ node of the soak's own
listen on the bridge's address, so the workers reach them over the veth. It adds the host faults:
a worker host killed whole (every process in its namespace ``kill -9``) with a run in flight and
booted again later; a worker host cut off (its veth link down) for longer than the retry budget,
then reconnected; the broker killed and restarted on its own storage; a worker host's warm
shutdown (SIGTERM to its processes) and restart; a worker host cut off for longer than the
liveness interval and restored with its processes alive (``partition-heal``). The result also
says the seconds each stop took and the most followers seen following one hour at once, and
counts the runs by the host that executed them (run tag ``competition/host``).

PostgreSQL's binaries are the machine's (``pg_ctl`` on PATH, or Debian's
``/usr/lib/postgresql/*/bin``) or, where there are none, the embedded PostgreSQL's. As root the
cluster runs as user ``postgres`` (created if missing), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
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

from competition_harness import hosts, replication
from competition_harness.keys import journal_keys, published_keys, stored_keys
from competition_harness.replication import Cluster, postgres_bindir
from competition_pipeline.fills.journal import scan, window_dir
from competition_pipeline.fills.stream import SUBJECT_PREFIX
from competition_pipeline.fills.stream import connect as stream_connect
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.follow import FOLLOW_TAG
from competition_pipeline.store.database import CompetitionStore, StoreError
from competition_pipeline.tools import simulate
from competition_pipeline.tools.log import log as _log
from competition_pipeline.tools.ports import free_port
from competition_pipeline.tools.processes import sigint_at_default
from competition_pipeline.tools.publish import ensure_stream, journal_lines, subject_and_id
from competition_pipeline.tools.simulate.messages import live_trade_id_base

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAULTS = ("kill-run", "db-stop", "kill-daemon", "kill-code-server", "late-segment", "corrupt")
#: Ordinary stops (a deploy, a restart): SIGTERM to the code server's or the daemon's process
#: group, as systemd stops a unit, and started again. Not failures: no run may fail of them.
STOP_FAULTS = ("sigterm-code-server", "sigterm-daemon")
#: The Celery topology's own faults (worker hosts and the broker): a worker host's warm shutdown
#: (SIGTERM to its processes) and restart; a host's network cut for longer than the liveness
#: interval and restored, its processes alive.
HOST_FAULTS = (
    "kill-host",
    "host-offline",
    "broker-restart",
    "sigterm-worker",
    "partition-heal",
)
#: ``--topology celery``, only when asked for (``--faults redeliver``): a run's task delivered
#: twice by the broker.
REDELIVER_FAULTS = ("redeliver",)
TOPOLOGIES = ("local", "celery")
SOURCES = ("journal", "nats")
#: The journal's own faults: with ``--source nats`` there are no files to add or corrupt.
JOURNAL_FAULTS = ("late-segment", "corrupt")
#: Only when asked for (``--faults failover``): the databases (instance and competition) on a
#: primary with a streaming standby (replication.py, URLs naming both); the primary killed
#: and the standby promoted, half the time after the replication was cut for a while (lossy:
#: commits on the primary only), then the old primary re-joined from a fresh base backup.
FAILOVER_FAULTS = ("failover",)
#: ``--source nats``: the soak's NATS server killed and started again on its JetStream storage.
NATS_FAULTS = ("nats-restart",)
#: ``--topology celery --source nats``: a worker's connection to NATS cut while a run reads.
NATS_HOST_FAULTS = ("nats-cut",)
#: A run in these states has not ended.
IN_FLIGHT = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED"})


def known_faults(topology: str, source: str) -> tuple[str, ...]:
    """The faults a soak of this topology and source can inject."""
    faults = [f for f in FAULTS if source == "journal" or f not in JOURNAL_FAULTS]
    faults += STOP_FAULTS
    if topology == "celery":
        faults += HOST_FAULTS
    if source == "nats":
        faults += NATS_FAULTS
    if source == "nats" and topology == "celery":
        faults += NATS_HOST_FAULTS
    return tuple(faults)


def accepted_faults(topology: str, source: str) -> tuple[str, ...]:
    """The faults ``--faults`` accepts: the default ones and those only run when named."""
    extra = REDELIVER_FAULTS if topology == "celery" else ()
    return (*known_faults(topology, source), *extra, *FAILOVER_FAULTS)


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
                preexec_fn=sigint_at_default,  # noqa: PLW1509
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

    def terminate(self, timeout: float = 60) -> float:
        """SIGTERM to the process's group once (as systemd stops a unit), SIGKILL after
        ``timeout``; seconds until the group had ended."""
        assert self.popen is not None
        started = time.monotonic()
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return 0.0
        while time.monotonic() - started < timeout:
            try:
                os.killpg(self.popen.pid, 0)
            except ProcessLookupError:
                break
            self.popen.poll()
            time.sleep(0.2)
        seconds = time.monotonic() - started
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)
        return seconds

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


@dataclass
class Soak:
    workdir: Path
    seed: int
    faults: tuple[str, ...]
    injected: Counter = field(default_factory=Counter)
    topology: str = "local"
    host_count: int = 2
    source: str = "journal"

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.journal = self.workdir / "journal"
        self.cluster = Cluster(postgres_bindir(), self.workdir / "pg" / "data", free_port())
        self.pair = None
        if "failover" in self.faults:
            self.pair = replication.ReplicatedPair(self.workdir / "pg")
            self.cluster = replication.PairCluster(self.pair)  # type: ignore[assignment]
        self.sim = simulate.FillSimulator(seed=self.seed)
        self.late_trade_id = 9_000_000_000_000 + self.seed * 1_000_000
        self.repairs: list[threading.Thread] = []
        self.stop_sim = threading.Event()
        self.home = self.workdir / "dagster_home"
        self.network: hosts.Network | None = None
        self.broker: hosts.Broker | None = None
        self.nats: hosts.NatsServer | None = None
        self.published: list[bytes] = []  # --source nats: every line the stream acknowledged
        self.pending: list[bytes] = []  # published, not acknowledged yet (NATS down)
        self.redelivered: list[str] = []  # runs whose task the broker delivered twice
        self.failovers: list[dict] = []  # --faults failover: each one's rows lost and recovery
        self.stops: list[tuple[str, float]] = []  # (fault, seconds until it had stopped)
        #: Per open hour, the most followers seen following it at once (STARTED, holding the
        #: liveness lock), sampled every 2 s by a thread.
        self.followers_at_once: dict[str, int] = {}

    # -- setting up --------------------------------------------------------------------------

    def setup(self, sample_hours: int, fills_per_hour: int, *, live: bool = True) -> None:
        """Everything started; with ``live`` the simulator appends to the open hour."""
        celery = self.topology == "celery"
        if celery:
            self.network = hosts.Network(self.workdir / "hosts")
            self.network.up()
            self.cluster.listen = f"127.0.0.1,{self.network.gateway}"
            self.broker = hosts.Broker(self.workdir, self.network.gateway)
            self.broker.start()
        self.cluster.init()
        now = Window.containing_ms(time.time_ns() // 1_000_000)
        self.closed = [Window(now.start - back * HOUR) for back in range(sample_hours, 0, -1)]
        for window in self.closed:
            simulate.write_hour(self.journal, window, fills_per_hour, sim=self.sim)
        if self.source == "nats":
            # The engine publishes; the sample hours go to the stream as the journal has them.
            address = self.network.gateway if self.network is not None else "127.0.0.1"
            self.nats = hosts.NatsServer(self.workdir, address)
            self.nats.start()
            self.pending = list(journal_lines(self.journal, self.closed))
            while self.pending:
                self._publish_pending()
        home = self.home = self.workdir / "dagster_home"
        home.mkdir()
        instance = REPO / ("docs/examples/dagster.celery.yaml" if celery else "dagster.yaml")
        shutil.copy(instance, home / "dagster.yaml")
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
        if self.broker is not None:
            env["CELERY_BROKER_URL"] = self.broker.url
        if self.nats is not None:
            env.update(FILL_SOURCE="nats", NATS_URL=self.nats.url)
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
        if celery:
            self._start_hosts(env)
        if not live:
            return
        if self.nats is not None:
            self.sim_thread = threading.Thread(
                target=self._publish_live, name="publisher", daemon=True
            )
        else:
            self.sim_thread = threading.Thread(
                target=simulate.append_live,
                kwargs={"root": self.journal, "rate_per_second": 20, "stop": self.stop_sim},
                name="simulator",
                daemon=True,
            )
        self.sim_thread.start()

    # -- the stream (--source nats) ------------------------------------------------------------

    def _publish_pending(self) -> None:
        """Publish the pending lines in order; a line counts as published once the stream
        acknowledged it (a NATS outage leaves it pending, to be sent again with the same
        ``Nats-Msg-Id``, so a re-send the stream already holds is dropped as a duplicate)."""
        assert self.nats is not None
        url = self.nats.url

        async def send() -> None:
            nc = await stream_connect(url, 5.0)
            try:
                js = nc.jetstream()
                await ensure_stream(js)
                while self.pending:
                    line = self.pending[0]
                    subject, msg_id = subject_and_id(line, SUBJECT_PREFIX)
                    await js.publish(subject, line, headers={"Nats-Msg-Id": msg_id}, timeout=5)
                    self.published.append(self.pending.pop(0))
            finally:
                await nc.close()

        try:
            asyncio.run(send())
        except Exception as exc:  # noqa: BLE001 (the server is down: try again later)
            _log(f"publish paused ({type(exc).__name__}); {len(self.pending)} lines pending")
            time.sleep(1)

    def _publish_live(self, rate_per_second: float = 20) -> None:
        """The engine's live fills, published to the stream (the journal's ``append_live``)."""
        last_ms = time.time_ns() // 1_000_000
        sim = simulate.FillSimulator(seed=self.seed, trade_id_base=live_trade_id_base(last_ms))
        while not self.stop_sim.wait(0.5):
            now_ms = time.time_ns() // 1_000_000
            due = max(1, int((now_ms - last_ms) / 1000 * rate_per_second))
            stamps = sim.spread(last_ms, now_ms + 1, due, 0, due)
            last_ms = now_ms
            self.pending += [x for x in sim.render(stamps).text.encode().splitlines() if x]
            self._publish_pending()
        while self.pending:  # the engine catches up before the soak stops it
            self._publish_pending()

    def _nats_restart(self) -> None:
        assert self.nats is not None
        self.nats.restart(self.random.uniform(3, 10))

    def _nats_cut(self, timeout: float = 90) -> bool:
        """A worker's connection to NATS cut (reset) while a run of it reads a window: the
        first established connection from a worker host to the soak's NATS server within
        ``timeout`` seconds (only runs read the stream on a worker host). False (not counted)
        when none was seen."""
        assert self.nats is not None and self.network is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for host in self.network.hosts:
                cut = host.cut(self.nats.address, self.nats.port)
                if cut:
                    _log(f"{host.name}: {cut} connection(s) to NATS cut")
                    return True
            time.sleep(0.02)
        _log("no worker connection to NATS to cut")
        return False

    def _redeliver(self) -> bool:
        """The broker delivers a run's task twice (as when a worker's acknowledgement is lost):
        the task of a run in flight on a worker host sent again with the same arguments, as
        ``CeleryRunLauncher`` sent it; a free host takes it. False (not counted) when no run was
        in flight within a minute."""
        from dagster import DagsterRun, deserialize_value
        from dagster_celery.make_app import make_app
        from dagster_celery.tasks import create_execute_job_task

        from competition_pipeline.defs.dagster_internals import ExecuteRunArgs, pack_value

        assert self.broker is not None
        started = self._started_run()
        if started is None:
            _log("no run in flight to deliver again")
            return False
        run_id = started[0]
        with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
            row = conn.execute("SELECT run_body FROM runs WHERE run_id = %s", (run_id,)).fetchone()
        run = deserialize_value(row[0], DagsterRun)
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run_id,
            instance_ref=None,  # the worker uses its own DAGSTER_HOME
            set_exit_code_on_failure=True,
        )
        app = make_app({"broker": self.broker.url})
        try:
            task = create_execute_job_task(app)
            task.si(execute_job_args_packed=pack_value(args)).apply_async(
                queue="dagster", routing_key="dagster.execute_job"
            )
        finally:
            app.close()
        _log(f"run {run_id} (in flight on {started[1]}) delivered again")
        self.redelivered.append(run_id)
        return True

    def redeliveries(self) -> dict[str, dict]:
        """Each run delivered twice: its status, and whether a run worker ignored a delivery
        (Dagster's engine event for a run no longer NOT_STARTED or STARTING)."""
        if not self.redelivered:
            return {}
        with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
            status = dict(
                conn.execute(
                    "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (self.redelivered,)
                )
            )
            ignored = {
                r
                for (r,) in conn.execute(
                    "SELECT DISTINCT run_id FROM event_logs WHERE run_id = ANY(%s)"
                    " AND dagster_event_type = 'ENGINE_EVENT' AND event LIKE %s",
                    (self.redelivered, "%Ignoring a %run%"),
                )
            }
            started = dict(
                conn.execute(
                    "SELECT run_id, count(*) FROM event_logs WHERE run_id = ANY(%s)"
                    " AND dagster_event_type = 'PIPELINE_START' GROUP BY run_id",  # RUN_START
                    (self.redelivered,),
                )
            )
        return {
            r: {
                "status": status.get(r),
                "second_delivery_ignored": r in ignored,
                "run_starts": started.get(r, 0),
            }
            for r in self.redelivered
        }

    def _start_hosts(self, env: dict) -> None:
        """``--hosts`` worker hosts, each ``celery worker`` with the worker's ``dagster.yaml``,
        reaching the databases and the broker over the bridge."""
        assert self.network is not None
        gateway = self.network.gateway
        for n in range(self.host_count):
            host = self.network.add_host(f"worker-{chr(ord('a') + n)}")
            shutil.copy(
                REPO / "docs/examples/dagster.celery-worker.yaml", host.home / "dagster.yaml"
            )
            worker_env = {
                **env,
                "DAGSTER_HOME": str(host.home),
                "DAGSTER_POSTGRES_URL": self.cluster.url("dagster", gateway),
                "COMPETITION_DATABASE_URL": self.cluster.url("competition", gateway),
            }
            argv = [str(BIN / "celery"), "-A", "dagster_celery.app", "worker", "--loglevel=INFO"]
            argv += ["-n", "competition@%h", "-Q", "dagster", "-c", "1"]
            argv += ["--prefetch-multiplier", "1", "-O", "fair"]
            host.start(argv, worker_env)

    def _host(self, name: str | None) -> hosts.Host:
        assert self.network is not None
        by_name = {h.name: h for h in self.network.hosts}
        return by_name.get(name or "") or self.random.choice(self.network.hosts)

    def _started_run(
        self, timeout: float = 60, *, follower: bool = False
    ) -> tuple[str, str] | None:
        """A run in flight on a worker host: (run id, host), waiting up to ``timeout`` seconds
        for one. In flight: STARTED and holding its liveness lock (a run already lost with its
        host, not yet marked failed, is STARTED without it); with ``follower``, a follower."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
                    rows = dict(
                        conn.execute(
                            "SELECT r.run_id, t.value FROM runs r JOIN run_tags t"
                            " ON t.run_id = r.run_id AND t.key = 'competition/host'"
                            " WHERE r.status = 'STARTED' AND (%s OR EXISTS (SELECT 1 FROM"
                            " run_tags f WHERE f.run_id = r.run_id AND f.key = %s))",
                            (not follower, FOLLOW_TAG),
                        ).fetchall()
                    )
                store = CompetitionStore(self.cluster.url("competition"))
                live = sorted(store.runs_holding_lock(rows)) if rows else []
            except (psycopg.Error, StoreError):
                live = []
            if live:
                run_id = self.random.choice(live)
                return run_id, rows[run_id]
            time.sleep(0.2)
        return None

    def hosts_of_runs(self) -> dict[str, int]:
        """Runs by the host that executed them (run tag ``competition/host``)."""
        return self._count_runs(
            "SELECT value, count(*) FROM run_tags WHERE key = 'competition/host' GROUP BY value"
        )

    def _count_runs(self, sql: str) -> dict[str, int]:
        """A ``key, count`` query over the instance's run tables as a dict; empty when the
        instance database does not answer (the soak reports what it can)."""
        try:
            with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
                return dict(conn.execute(sql).fetchall())
        except psycopg.Error:
            return {}

    def _password_in_logs(self) -> bool | None:
        """Whether any log the soak's processes wrote holds the broker's password."""
        if self.broker is None:
            return None
        secret = self.broker.password.encode()
        return any(
            secret in path.read_bytes()
            for path in self.workdir.rglob("*")
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt")
        )

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
        """False (not counted) when no run was in flight to kill within a minute. On a worker
        host: the pool processes of the host running a started run (Celery starts new ones)."""
        if self.network is not None:
            started = self._started_run()
            if started is None:
                _log("no run in flight to kill")
                return False
            host = self._host(started[1])
            main = host.popen.pid if host.popen is not None else -1
            for pid in host.pids():
                if pid != main and _parent(pid) == main:
                    os.kill(pid, signal.SIGKILL)
            return True
        pids = self._wait_for_run_worker()
        if not pids:
            _log("no run in flight to kill")
            return False
        os.kill(pids[0], signal.SIGKILL)
        return True

    def _db_stop(self) -> None:
        self.cluster.stop()
        if self.nats is None:
            self._late_segment(count=False)  # the engine goes on filing late fills meanwhile
        time.sleep(self.random.uniform(15, 25))  # longer than the retry budget (2 x 2 s, exp)
        self.cluster.start()

    def _kill_daemon(self) -> None:
        self.daemon.kill9()
        time.sleep(2)
        self.daemon.start()

    def _kill_code_server(self) -> None:
        if self.network is None:
            self._wait_for_run_worker()
        else:
            self._started_run()
        self.code_server.kill9(group=False)  # its run workers are orphaned, not killed
        time.sleep(2)
        self.code_server.start()
        self._wait_for_code_server()

    def _while_following(self, timeout: float = 60) -> None:
        """Wait (up to ``timeout`` s) for the open hour's follower to follow and for no run to
        be in flight but followers: a deploy while the hour is followed, not while the daemon
        hands a run over (a launch the code server's stop interrupts fails, in Dagster's hands)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
                    busy = conn.execute(
                        "SELECT count(*) FROM runs r WHERE r.status IN"
                        " ('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED') AND NOT EXISTS"
                        " (SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id AND t.key = %s)",
                        (FOLLOW_TAG,),
                    ).fetchone()[0]  # type: ignore[index]
            except psycopg.Error:
                busy = 1
            if not busy and self._started_run(timeout=1, follower=True) is not None:
                return
            time.sleep(0.5)

    def _sigterm_code_server(self) -> None:
        """A deploy: the code server's group (it and its run workers) SIGTERM, started again."""
        self._while_following()
        self.stops.append(("sigterm-code-server", self.code_server.terminate()))
        self.code_server.start()
        self._wait_for_code_server()

    def _sigterm_daemon(self) -> None:
        self._while_following()
        self.stops.append(("sigterm-daemon", self.daemon.terminate()))
        self.daemon.start()

    def _sigterm_worker(self) -> bool:
        """A worker host's warm shutdown (its processes SIGTERM, a run in flight if any), booted
        again 5-15 s later."""
        started = self._started_run(timeout=30)
        host = self._host(started[1] if started else None)
        self.stops.append(("sigterm-worker", host.terminate()))
        time.sleep(self.random.uniform(5, 15))
        host.start()
        return True

    def _partition_heal(self) -> None:
        """A worker host (one with a run in flight, the follower if it has one) cut off for
        longer than the liveness interval (FILL_DEAD_RUN_SECONDS, 30 s here, plus the server's
        ~25 s to drop its sessions), then restored with its processes alive: the run it had is
        replaced meanwhile, and must not write once it is back."""
        started = self._started_run(timeout=30, follower=True) or self._started_run(timeout=5)
        host = self._host(started[1] if started else None)
        host.link(up=False)
        time.sleep(self.random.uniform(70, 90))
        host.link(up=True)

    def _kill_host(self) -> bool:
        """A worker host with a run in flight killed whole; it boots again 15-30 s later."""
        started = self._started_run()
        if started is None:
            _log("no run in flight on a worker host")
            return False
        host = self._host(started[1])
        killed = host.kill()
        _log(f"{host.name}: {killed} processes killed (run {started[0]} in flight)")
        time.sleep(self.random.uniform(15, 30))
        host.start()
        return True

    def _host_offline(self) -> None:
        """A worker host (one with a run in flight, if any) cut off for 20-40 s: longer than
        the retry budget (2 retries, 2 s apart, exponential), then reconnected."""
        started = self._started_run(timeout=20)
        host = self._host(started[1] if started else None)
        host.link(up=False)
        time.sleep(self.random.uniform(20, 40))
        host.link(up=True)

    def _broker_restart(self) -> None:
        assert self.broker is not None
        self.broker.restart(self.random.uniform(3, 10))

    def _failover(self) -> None:
        """The primary killed, the standby promoted; lossy half the time (the replication cut
        5-15 s before: loads, runs and sensor cursors committed on the primary only are lost);
        the old primary re-joined from a fresh base backup 5-15 s later."""
        assert self.pair is not None
        lossy = self.random.random() < 0.5
        if lossy:
            self.pair.cut()
            time.sleep(self.random.uniform(5, 15))
        url = self.cluster.url("competition")
        committed = stored_keys(url)  # on the primary, a moment before it dies
        started = time.monotonic()
        self.pair.failover(lossy=lossy)
        self.injected[f"failover ({'lossy' if lossy else 'clean'})"] += 1
        lost = committed - stored_keys(url)
        _log(f"failover done in {time.monotonic() - started:.1f} s; {len(lost)} rows lost")
        record = {"lossy": lossy, "rows_lost": len(lost), "seconds_to_recover": 0.0}
        self.failovers.append(record)
        if lost:
            thread = threading.Thread(
                target=self._recovered, args=(lost, record, started), daemon=True
            )
            thread.start()
            self.repairs.append(thread)  # waited for before the convergence is measured
        time.sleep(self.random.uniform(5, 15))
        self.pair.rejoin()

    def _recovered(self, lost: set, record: dict, started: float, timeout: float = 600) -> None:
        """Seconds from the failover until every row it lost is in the table again."""
        while time.monotonic() - started < timeout:
            try:
                if lost <= stored_keys(self.cluster.url("competition")):
                    record["seconds_to_recover"] = round(time.monotonic() - started, 1)
                    return
            except psycopg.Error:
                pass
            time.sleep(1)
        record["seconds_to_recover"] = None

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

    def _sample_followers(self, done: threading.Event) -> None:
        """Every 2 s: per hour, how many follower runs are following it (STARTED, holding the
        liveness lock); the most seen at once is kept."""
        while not done.wait(2):
            try:
                with psycopg.connect(self.cluster.url("dagster"), connect_timeout=5) as conn:
                    rows = conn.execute(
                        "SELECT r.run_id, p.value FROM runs r"
                        " JOIN run_tags f ON f.run_id = r.run_id AND f.key = %s"
                        " JOIN run_tags p ON p.run_id = r.run_id AND p.key = 'dagster/partition'"
                        " WHERE r.status = 'STARTED'",
                        (FOLLOW_TAG,),
                    ).fetchall()
                store = CompetitionStore(self.cluster.url("competition"), connect_timeout=5)
                alive = store.runs_holding_lock([r for r, _ in rows]) if rows else set()
            except (psycopg.Error, StoreError):
                continue
            now = Counter(hour for run_id, hour in rows if run_id in alive)
            for hour, count in now.items():
                self.followers_at_once[hour] = max(self.followers_at_once.get(hour, 0), count)

    def _stopped_runs(self) -> dict[str, int]:
        """Runs that ended on a stop signal (tag ``competition/stopped``), by status."""
        return self._count_runs(
            "SELECT r.status, count(*) FROM runs r JOIN run_tags t ON"
            " t.run_id = r.run_id AND t.key = 'competition/stopped' GROUP BY 1"
        )

    def run(self, duration: float, timeout: float, max_faults: int | None = None) -> dict:
        sampling = threading.Event()
        sampler = threading.Thread(target=self._sample_followers, args=(sampling,), daemon=True)
        sampler.start()
        try:
            return self._run(duration, timeout, max_faults)
        finally:
            sampling.set()

    def _run(self, duration: float, timeout: float, max_faults: int | None = None) -> dict:
        plan = list(self.faults)
        self.random.shuffle(plan)
        deadline = time.monotonic() + duration
        counted = (
            *FAULTS,
            *STOP_FAULTS,
            *HOST_FAULTS,
            *NATS_FAULTS,
            *NATS_HOST_FAULTS,
            *REDELIVER_FAULTS,
            *FAILOVER_FAULTS,
        )
        while time.monotonic() < deadline and sum(self.injected[f] for f in counted) != max_faults:
            time.sleep(self.random.uniform(5, 12))
            if time.monotonic() >= deadline:
                break
            kind = plan.pop() if plan else self.random.choice(self.faults)
            self.inject(kind)
        _log("faults stopped; stopping the simulator and waiting, touching nothing")
        self.stop_sim.set()
        if hasattr(self, "sim_thread"):
            self.sim_thread.join(timeout=30)
        for repair in self.repairs:  # the engine's rewrite of a corrupt segment is not ours
            repair.join()
        cleared = time.monotonic()
        if self.nats is not None:
            expected, windows = published_keys(self.published)
        else:
            expected, windows = journal_keys(self.journal), len(scan(self.journal)[0])
        stored = self.wait_for_table(expected, timeout, poll=3)
        missing, extra = len(expected - stored), len(stored - expected)
        waited = time.monotonic() - cleared
        # The runs in flight when it converged end on their own.
        runs = self.settle_runs(90, poll=3)
        return {
            "topology": self.topology,
            "source": self.source,
            "runs": runs,
            "hosts": self.hosts_of_runs() if self.network is not None else {},
            "broker_password_in_logs": self._password_in_logs(),
            "faults": dict(self.injected),
            "redelivered": self.redeliveries() if self.redelivered else {},
            "failovers": self.failovers,
            "windows": windows,
            "rows_expected": len(expected),
            "rows_recorded": len(stored),
            "missing": missing,
            "extra": extra,
            "seconds_to_converge": round(waited, 1) if missing == extra == 0 else None,
            "followers_at_once": dict(self.followers_at_once),
            "followers_at_once_max": max(self.followers_at_once.values(), default=0),
            "stops": [(kind, round(seconds, 1)) for kind, seconds in self.stops],
            "stopped_runs": self._stopped_runs(),
            "converged": missing == 0 and extra == 0,
        }

    def wait_for_table(self, expected: set, timeout: float, poll: float) -> set:
        """The stored keys once they equal ``expected``, or when ``timeout`` seconds have passed
        (the database may be down meanwhile: read as nothing stored)."""
        started = time.monotonic()
        while True:
            try:
                stored = stored_keys(self.cluster.url("competition"))
            except psycopg.Error:
                stored = set()
            if stored == expected or time.monotonic() - started > timeout:
                return stored
            time.sleep(poll)

    def settle_runs(self, seconds: float, poll: float) -> dict[str, int]:
        """The runs by status once none is in flight, or after ``seconds``."""
        deadline = time.monotonic() + seconds
        runs = self._runs_by_status()
        while set(runs) & IN_FLIGHT and time.monotonic() <= deadline:
            time.sleep(poll)
            runs = self._runs_by_status()
        return runs

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
        if self.network is not None:
            self.network.close()
        if self.broker is not None:
            self.broker.kill()
        if self.nats is not None:
            self.nats.kill()
        try:
            self.cluster.stop()
        except (subprocess.CalledProcessError, FileNotFoundError):
            pass
        if self.pair is not None:
            self.pair.close()


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


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
    rows.append(
        ("runs by status", ", ".join(f"{k} {v}" for k, v in sorted(result["runs"].items())))
    )
    if result.get("hosts"):
        rows.append(
            ("runs by host", ", ".join(f"{k} {v}" for k, v in sorted(result["hosts"].items())))
        )
    if result.get("redelivered"):
        ignored = sum(r["second_delivery_ignored"] for r in result["redelivered"].values())
        rows.append(
            (
                "runs delivered twice",
                f"{len(result['redelivered'])}, second delivery ignored {ignored}",
            )
        )
    if result.get("failovers"):
        lossy = [f for f in result["failovers"] if f["lossy"]]
        recovered = [f["seconds_to_recover"] for f in lossy if f["rows_lost"]]
        rows.append(
            (
                "failovers",
                f"{len(result['failovers'])} ({len(lossy)} lossy: rows lost"
                f" {', '.join(str(f['rows_lost']) for f in lossy) or '-'}; recovered in"
                f" {', '.join(f'{s} s' for s in recovered) or '-'})",
            )
        )
    if result.get("stops"):
        rows.append(
            ("seconds to stop", ", ".join(f"{kind} {seconds}" for kind, seconds in result["stops"]))
        )
    if result.get("stopped_runs"):
        rows.append(
            (
                "runs ended by a stop",
                ", ".join(f"{k} {v}" for k, v in sorted(result["stopped_runs"].items())),
            )
        )
    rows.append(("most followers of one hour at once", str(result.get("followers_at_once_max"))))
    seconds = result["seconds_to_converge"]
    rows.append(("seconds to converge", "did not converge" if seconds is None else str(seconds)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    celery = args.topology == "celery"
    known = known_faults(args.topology, args.source)
    accepted = accepted_faults(args.topology, args.source)
    chosen = args.faults if args.faults is not None else ",".join(known)
    faults = tuple(f for f in chosen.split(",") if f)
    unknown = set(faults) - set(accepted)
    if unknown:
        args.error(
            f"unknown faults {sorted(unknown)} for --topology {args.topology}"
            f" --source {args.source};"
            f" choose from {', '.join(accepted)}"
        )
    if celery and (why := hosts.available()) is not None:
        raise SystemExit(f"--topology celery: {why}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="competition-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(
        workdir,
        args.seed,
        faults,
        topology=args.topology,
        host_count=args.hosts,
        source=args.source,
    )
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
