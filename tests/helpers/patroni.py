"""A Patroni cluster of the test's own: one etcd (v2 API, which Debian's Patroni 3.0 speaks through
python3-etcd) and two Patroni members managing PostgreSQL 15 on private ports, all under a
directory in /tmp; as root they run as ``postgres``. Patroni is what users run to fail over:
killing the leader (``kill -9`` of Patroni and its postmaster) lets the replica take the leader
key once its TTL expires and promote itself."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from competition_harness.replication import postgres_bindir
from competition_pipeline.tools.ports import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PATRONI = shutil.which("patroni") or "/usr/bin/patroni"

_MEMBER = """\
scope: competition
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd:
  host: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1073741824
    postgresql:
      use_pg_rewind: false
      parameters:
        fsync: "off"
        max_connections: 100
  initdb:
    - encoding: UTF8
    - auth: trust
  pg_hba:
    - host replication all 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
    - local all all trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {data}
  bin_dir: {bindir}
  pgpass: {workdir}/{name}.pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
  parameters:
    unix_socket_directories: {workdir}
"""


@dataclass
class Member:
    name: str
    port: int
    api: int
    data: Path
    process: subprocess.Popen | None = None

    def role(self) -> str | None:
        """``leader``/``primary``/``master`` or ``replica`` per its REST API, None if down."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api}/patroni", timeout=2) as r:
                return json.load(r).get("role")
        except (OSError, ValueError):
            return None


@dataclass
class PatroniCluster:
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="competition-patroni-"))
    )
    members: list[Member] = field(default_factory=list)
    etcd: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.user = "postgres" if os.geteuid() == 0 else None
        self.etcd_port, self.peer_port = free_port(), free_port()
        for name in ("node-a", "node-b"):
            data = self.workdir / name / "data"
            self.members.append(Member(name, free_port(), free_port(), data))

    def _popen(self, argv: list[str], log: str) -> subprocess.Popen:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        with (self.workdir / log).open("a") as out:
            return subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self, timeout: float = 120) -> None:
        """etcd, then both members; returns once one leads and the other replicates."""
        if self.user:
            owner = pwd.getpwnam(self.user)
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        self.etcd = self._popen(
            [
                ETCD,
                *("--name", "e", "--data-dir", str(self.workdir / "etcd")),
                *("--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}"),
                *("--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}"),
                *("--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}"),
                *("--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}"),
                *("--initial-cluster", f"e=http://127.0.0.1:{self.peer_port}"),
                "--enable-v2=true",
            ],
            "etcd.log",
        )
        bindir = Path(os.path.realpath(postgres_bindir() / "initdb")).parent
        for member in self.members:
            config = self.workdir / f"{member.name}.yml"
            config.write_text(
                _MEMBER.format(
                    name=member.name,
                    api=member.api,
                    etcd=self.etcd_port,
                    port=member.port,
                    data=member.data,
                    bindir=bindir,
                    workdir=self.workdir,
                )
            )
            if self.user:
                owner = pwd.getpwnam(self.user)
                os.chown(config, owner.pw_uid, owner.pw_gid)
            member.process = self._popen([PATRONI, str(config)], f"{member.name}.log")
            self.wait(lambda m=member: m.role() is not None, timeout, f"{member.name} up")
        self.wait(lambda: self.leader() is not None and self.replica() is not None, timeout, "")

    @staticmethod
    def wait(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Patroni: {what or 'a leader and a replica'} not reached")
            time.sleep(0.3)

    def leader(self) -> Member | None:
        return next((m for m in self.members if m.role() in ("leader", "primary", "master")), None)

    def replica(self) -> Member | None:
        return next((m for m in self.members if m.role() == "replica"), None)

    def url(self, database: str) -> str:
        hosts = ",".join(f"127.0.0.1:{m.port}" for m in self.members)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    @staticmethod
    def _postmaster(member: Member) -> int | None:
        try:
            return int((member.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self, member: Member) -> None:
        """The member gone at once: its Patroni and its postmaster ``kill -9``."""
        postmaster = self._postmaster(member)
        if member.process is not None:
            os.killpg(member.process.pid, signal.SIGKILL)
            member.process.wait(timeout=30)
            member.process = None
        if postmaster is not None:
            try:
                os.kill(postmaster, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for member in self.members:
            self.kill(member)
        if self.etcd is not None:
            os.killpg(self.etcd.pid, signal.SIGKILL)
            self.etcd.wait(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)
