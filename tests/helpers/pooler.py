"""A PgBouncer of the test's own (Debian's ``pgbouncer``), in front of the test's PostgreSQL, in
session or transaction mode: what docs/operations.md says works and what the product refuses."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from competition_pipeline.store import dburl
from competition_pipeline.tools.ports import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextmanager
def pgbouncer(server_url: str, mode: str) -> Iterator[int]:
    """PgBouncer (``pool_mode`` = ``mode``) forwarding every database of ``server_url``'s server;
    yields its port. As root it runs as ``postgres`` (PgBouncer refuses root)."""
    (host, port), *_ = dburl.hosts_of(dburl.parse(server_url))
    user = dburl.parse(server_url).username or "postgres"
    workdir = Path(tempfile.mkdtemp(prefix="competition-pgbouncer-"))
    listen = free_port()
    config = workdir / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={port or 5432} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = {mode}\ndefault_pool_size = 4\n"
        f"logfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    argv = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        argv = [PGBOUNCER, "-u", "postgres", str(config)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"pgbouncer did not start: {error!r}") from None
                time.sleep(0.1)
        yield listen
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
