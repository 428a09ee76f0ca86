"""Hosts on one machine, for real: network namespaces on a bridge, and a RabbitMQ broker of our own.

The Celery topology of the soak (``competition-pipeline soak --topology celery``) and its CI test
run each worker host in a network namespace of its own (``ip netns``), joined to a bridge by a
veth pair, with its own hostname (``unshare --uts``) and its own ``DAGSTER_HOME``. The service
host (daemon, code server) and the servers stay in the root namespace; the servers listen on the
bridge's address, so every byte a worker exchanges with PostgreSQL or the broker crosses the veth.
A host is killed whole (``kill -9`` of every process in its namespace) or cut off (its veth
link down) and brought back.

Every name (namespace, bridge, veth, broker node) carries a random suffix, and :meth:`close`
removes what was made; as root only (``ip netns`` needs it). No secret is printed: the broker's
password is random and appears only in the environment of the processes that use it.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from competition_pipeline.tools.log import log as _log
from competition_pipeline.tools.ports import free_port
from competition_pipeline.tools.processes import sigint_at_default


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def available() -> str | None:
    """Why hosts cannot be made here (not root, no ``ip netns``), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True)
        subprocess.run(["unshare", "--version"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"ip netns / unshare unavailable: {exc}"
    if not RABBITMQ.exists():
        return f"no RabbitMQ server at {RABBITMQ} (Debian's rabbitmq-server)"
    return None


@dataclass
class Host:
    """A worker host: a network namespace, its veth, its hostname and its processes."""

    name: str  # the hostname its processes see
    netns: str
    veth: str  # the bridge's end, in the root namespace
    address: str
    home: Path  # its DAGSTER_HOME
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    popen: subprocess.Popen | None = None

    def start(self, argv: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """Start ``argv`` in the namespace under the host's hostname (the last argv and
        environment again when none are given: the host boots again)."""
        self.argv = argv or self.argv
        self.env = env or self.env
        assert self.log is not None
        command = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c"]
        command += ['hostname "$0" && exec "$@"', self.name, *self.argv]
        with self.log.open("a") as out:
            self.popen = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=sigint_at_default,  # noqa: PLW1509
            )

    def pids(self) -> list[int]:
        listed = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        )
        return [int(p) for p in listed.stdout.split()]

    def kill(self) -> int:
        """``kill -9`` every process in the namespace, as a power cut would; how many."""
        killed = 0
        for _ in range(5):  # a dying parent may still fork: until none is left
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        if self.popen is not None:
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return killed

    def terminate(self, timeout: float = 60) -> float:
        """SIGTERM to every process in the namespace at once (as systemd stops a unit, its
        default KillMode=control-group: a Celery worker's warm shutdown, its pool processes
        signalled too); SIGKILL what is left after ``timeout``. Seconds until all had ended."""
        started = time.monotonic()
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        while self.pids() and time.monotonic() - started < timeout:
            time.sleep(0.2)
        seconds = time.monotonic() - started
        if self.pids():
            self.kill()
        elif self.popen is not None:
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return seconds

    def link(self, up: bool) -> None:
        """Connect or cut the host: its veth's bridge end up or down."""
        _ip("link", "set", self.veth, "up" if up else "down")

    def cut(self, address: str, port: int) -> int:
        """Close the host's established TCP connections to ``address:port`` (``ss -K`` in its
        namespace, as a middlebox's reset would; needs CONFIG_INET_DIAG_DESTROY); how many."""
        out = subprocess.run(
            ["ss", "-N", self.netns, "-K", "-t", "-n", "state", "established"]
            + ["dst", address, "dport", "=", f":{port}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return max(0, len(out.stdout.strip().splitlines()) - 1)  # less the header line

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Network:
    """A bridge with an address in the root namespace, and the hosts joined to it."""

    workdir: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"cpbr{self.suffix}"
        self.prefix = f"10.{random.randint(64, 250)}.{random.randint(1, 250)}"
        self.gateway = f"{self.prefix}.1"
        self.made = False

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made = True
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        """A namespace ``cpns<suffix><n>`` whose ``eth0`` is on the bridge."""
        n = len(self.hosts) + 1
        netns, veth = f"cpns{self.suffix}{n}", f"cpv{self.suffix}{n}"
        address = f"{self.prefix}.{n + 1}"
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        host = Host(name, netns, veth, address, home, log=self.workdir / f"{name}.log")
        self.hosts.append(host)
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        for argv in (
            ("addr", "add", f"{address}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("netns", "exec", netns, "ip", *argv)
        return host

    def close(self) -> None:
        """Kill every host's processes, delete the namespaces (their veths go with them) and the
        bridge."""
        for host in self.hosts:
            host.kill()
            subprocess.run(["ip", "netns", "del", host.netns], check=False, capture_output=True)
            subprocess.run(["ip", "link", "del", host.veth], check=False, capture_output=True)
        if self.made:
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class OwnServer:
    """A server of the harness's own (never the machine's), in a process group of its own:
    ``kill -9`` of the whole group, and a restart on the same storage, for the server faults."""

    popen: subprocess.Popen | None
    down: str  # what the log says while it is down

    def start(self, timeout: float = 60) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)
        self.popen = None

    def restart(self, down_seconds: float) -> None:
        self.kill()
        _log(f"{self.down} for {down_seconds:.0f} s")
        time.sleep(down_seconds)
        self.start()


@dataclass
class Broker(OwnServer):
    """A RabbitMQ node of our own (its own node name, ports, database and logs) listening on
    ``address``; killed and started again on the same database for the broker fault. Never the
    machine's broker."""

    workdir: Path
    address: str
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    popen: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.node = f"cp{self.suffix}@localhost"
        self.port = free_port(self.address)
        self.dist_port = free_port("127.0.0.1")
        self.user = "competition"
        self.password = secrets.token_hex(12)
        self.base = self.workdir / f"rabbitmq-{self.suffix}"

    @property
    def url(self) -> str:
        """The AMQP URL with its password: only for the environment of the processes using it."""
        return f"amqp://{self.user}:{self.password}@{self.address}:{self.port}//"

    def _env(self) -> dict[str, str]:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")  # no management listener
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.address}:{self.port}\n"
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "loopback_users = none\n"
            # A host cut off is noticed by the broker, which gives its unacked tasks to another.
            "heartbeat = 10\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),  # the Erlang cookie of this node only
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=self.address,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self, timeout: float = 120) -> None:
        if not RABBITMQ.exists():
            raise SystemExit(f"no RabbitMQ server at {RABBITMQ} (Debian's rabbitmq-server)")
        with (self.base.parent / f"rabbitmq-{self.suffix}.log").open("a") as out:
            self.popen = subprocess.Popen(
                [str(RABBITMQ)],
                env=self._env(),
                cwd=self.base,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise SystemExit(f"the broker exited; see {out.name}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as sock:
                    sock.sendall(b"AMQP\x00\x00\x09\x01")
                    if sock.recv(1):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the broker did not start")
            time.sleep(0.5)

    #: Killed whole, queued tasks survive on disk only if durable, which Celery's queues are.
    down = "broker down"


NATS_SERVER = "nats-server"


@dataclass
class NatsServer(OwnServer):
    """A NATS server with JetStream of our own, listening on ``address``, its storage in
    ``workdir``: killed (``kill -9``) and started again on the same storage for the NATS fault.
    Never the machine's server."""

    workdir: Path
    address: str
    popen: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.port = free_port(self.address)
        self.store = self.workdir / "nats-store"

    @property
    def url(self) -> str:
        return f"nats://{self.address}:{self.port}"

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which(NATS_SERVER) or "/usr/sbin/nats-server"
        self.store.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "nats-server.log").open("a") as out:
            self.popen = subprocess.Popen(
                [binary, "-js", "-sd", str(self.store), "-a", self.address, "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as sock:
                    if sock.recv(4) == b"INFO":
                        return
            except OSError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the NATS server did not start")
            time.sleep(0.2)

    down = "NATS server down (JetStream storage kept)"
