"""Private PostgreSQL clusters of the harness's own: one (:class:`Cluster`, the soak's), or a
primary and a streaming standby (:class:`ReplicatedPair`, the failover tests' and soak's).

The pair is two private clusters on 127.0.0.1 (as root they run as ``postgres``): ``initdb`` for
the primary, ``pg_basebackup -R`` for the standby (asynchronous streaming replication, as a
managed service's or Patroni's default), and the moves an orchestrator makes: cut the
replication (the standby stops receiving: commits on the primary only), kill the primary
(``pg_ctl stop -m immediate``: no shutdown checkpoint), promote the standby (``pg_ctl
promote``), a clean switchover (the standby caught up, the primary stopped, the standby
promoted), and re-join the old primary as a standby of the new one from a fresh base backup.
:meth:`ReplicatedPair.url` names both nodes with ``target_session_attrs=read-write``, so a client
reaches whichever is the primary now. Never the machine's server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from competition_pipeline.tools import embedded
from competition_pipeline.tools.log import log as _log
from competition_pipeline.tools.ports import free_port


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
    listen: str = "127.0.0.1"  # listen_addresses; the Celery topology adds the bridge's address

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
        if self.listen != "127.0.0.1":  # the worker hosts' subnet (a private bridge)
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 10.0.0.0/8 trust\n")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for name in ("dagster", "competition"):
                conn.execute(f"CREATE DATABASE {name}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses='{self.listen}' -c unix_socket_directories=''"
            " -c fsync=off -c max_connections=200"
        )
        log = self.data.parent / "postgres.log"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str, host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{database}"


@dataclass
class ReplicatedPair:
    """Node ``a`` starts as the primary, node ``b`` as its standby; :attr:`primary` and
    :attr:`standby` follow the promotions."""

    workdir: Path
    nodes: list[Cluster] = field(default_factory=list)

    def __post_init__(self) -> None:
        # pg_basebackup sits beside initdb's real file (a PATH entry may link initdb alone).
        bindir = Path(os.path.realpath(postgres_bindir() / "initdb")).parent
        self.nodes = [
            Cluster(bindir, self.workdir / name / "data", free_port()) for name in ("a", "b")
        ]
        self.primary, self.standby = self.nodes

    # -- building ------------------------------------------------------------------------------

    def start(self) -> None:
        """The primary with the ``dagster`` and ``competition`` databases, and its standby
        streaming (caught up when this returns)."""
        self.primary.init()
        self._base_backup(self.standby, self.primary)
        self.wait_caught_up()

    def _base_backup(self, node: Cluster, source: Cluster) -> None:
        """``node`` as a fresh streaming standby of ``source`` (its old data thrown away)."""
        shutil.rmtree(node.data, ignore_errors=True)
        node.data.mkdir(parents=True)
        node.data.chmod(0o700)
        node.user = source.user
        if node.user:
            owner = pwd.getpwnam(node.user)
            for path in (node.data.parent, node.data):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        node._run(
            "pg_basebackup",
            *("-D", str(node.data), "-h", "127.0.0.1", "-p", str(source.port)),
            *("-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync"),
        )
        node.start()

    # -- what clients use ----------------------------------------------------------------------

    def url(self, database: str, host: str = "127.0.0.1") -> str:
        """Both nodes, libpq's multi-host form: whichever is the primary takes the writes."""
        hosts = ",".join(f"{host}:{node.port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    @staticmethod
    def _query(node: Cluster, sql: str) -> tuple:
        with psycopg.connect(node.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql).fetchone()  # type: ignore[return-value]

    # -- replication ---------------------------------------------------------------------------

    def wait_caught_up(self, timeout: float = 60) -> None:
        """Until the standby has replayed everything the primary has written."""
        (target,) = self._query(self.primary, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        while True:
            (done,) = self._query(
                self.standby, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            )
            if done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not catch up")
            time.sleep(0.1)

    def cut(self, timeout: float = 30) -> None:
        """The standby stops receiving WAL (its ``primary_conninfo`` points nowhere): from now
        on commits reach the primary only, as when the replication link breaks."""
        with psycopg.connect(self.standby.url("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + timeout
            while conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise TimeoutError("the standby's WAL receiver did not stop")
                time.sleep(0.1)
        _log("replication cut: commits reach the primary only")

    def kill_primary(self) -> None:
        """The primary gone at once (``-m immediate``: no shutdown checkpoint, no last WAL
        sent)."""
        self.primary._run("pg_ctl", "-D", str(self.primary.data), "-m", "immediate", "-w", "stop")
        _log(f"primary on port {self.primary.port} killed")

    def promote(self) -> None:
        """The standby promoted: it is the primary now (the old one, if alive, is not told)."""
        self.standby._run("pg_ctl", "-D", str(self.standby.data), "-w", "promote")
        self.primary, self.standby = self.standby, self.primary
        _log(f"node on port {self.primary.port} promoted")

    def failover(self, *, lossy: bool) -> None:
        """An unplanned failover: with ``lossy``, the last commits never reached the standby."""
        if not lossy:
            self.wait_caught_up()
        self.kill_primary()
        self.promote()

    def switchover(self) -> None:
        """A planned switchover: the primary stopped cleanly (its walsender sends everything,
        the shutdown checkpoint included), the caught-up standby promoted, the old primary
        re-joined as the new one's standby."""
        self.wait_caught_up()
        self.primary.stop()
        self.promote()
        self.rejoin()

    def rejoin(self) -> None:
        """The node that is not the primary made its standby again (a fresh base backup: the
        old primary's unreplicated commits, if any, are thrown away, as Patroni does)."""
        try:
            self.standby.stop()
        except subprocess.CalledProcessError:
            pass  # already down
        self._base_backup(self.standby, self.primary)
        self.wait_caught_up()
        _log(f"node on port {self.standby.port} re-joined as a standby")

    def close(self) -> None:
        for node in self.nodes:
            try:
                node._run("pg_ctl", "-D", str(node.data), "-m", "immediate", "-w", "stop")
            except (subprocess.CalledProcessError, FileNotFoundError):
                pass


class PairCluster:
    """The pair behind the soak's :class:`Cluster` interface (``--faults failover``): its URLs
    name both nodes; ``stop``/``start`` (the ``db-stop`` fault) act on the primary of the moment;
    ``listen`` reaches both nodes (the Celery topology's bridge)."""

    def __init__(self, pair: ReplicatedPair) -> None:
        self.pair = pair

    @property
    def listen(self) -> str:
        return self.pair.primary.listen

    @listen.setter
    def listen(self, value: str) -> None:
        for node in self.pair.nodes:
            node.listen = value

    def init(self) -> None:
        self.pair.start()

    def start(self) -> None:
        self.pair.primary.start()

    def stop(self) -> None:
        self.pair.primary.stop()

    def url(self, database: str, host: str = "127.0.0.1") -> str:
        return self.pair.url(database, host)
