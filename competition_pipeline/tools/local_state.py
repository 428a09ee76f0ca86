"""Where the commands find the database: the environment, else the running local start's.

``competition-pipeline up`` writes ``local.json`` in its state directory (COMPETITION_STATE_DIR,
default ``.var/``) once its databases answer; the other commands use COMPETITION_DATABASE_URL
(DAGSTER_POSTGRES_URL) when it is set, else the URLs of that file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from competition_pipeline import redaction
from competition_pipeline.store import dburl

REPO = Path(__file__).resolve().parents[2]
STATE_FILE = "local.json"


def state_dir() -> Path:
    return Path(os.environ.get("COMPETITION_STATE_DIR") or REPO / ".var").resolve()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_local_state(state: Path | None = None) -> dict | None:
    """The running local start's state file, or None when none is running."""
    path = (state or state_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if _pid_alive(int(data.get("pid", 0))) else None


def write_local_state(state: Path, **entries: object) -> Path:
    """Written by ``up`` once the databases answer; URLs only when they carry no secret (a
    configured URL with a password, in its userinfo or a ``password=`` parameter, stays in the
    environment, the file names the variable instead). Mode 0600: readable by its owner only."""
    path = state / STATE_FILE
    data: dict[str, object] = {"pid": os.getpid()}
    for name, variable in (
        ("competition_database_url", "COMPETITION_DATABASE_URL"),
        ("dagster_postgres_url", "DAGSTER_POSTGRES_URL"),
    ):
        url = os.environ[variable]
        secret = dburl.password(url) or redaction.secrets_of(url)
        data[name] = None if secret else url
        data[f"{name}_redacted"] = redaction.url(url)
    data.update(entries)
    text = redaction.scrub(json.dumps(data, indent=2) + "\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file kept its mode through O_TRUNC
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def database_url(dagster: bool = False) -> str:
    """COMPETITION_DATABASE_URL (DAGSTER_POSTGRES_URL with ``dagster``) when set, else the running
    local start's; otherwise SystemExit naming both ways."""
    variable = "DAGSTER_POSTGRES_URL" if dagster else "COMPETITION_DATABASE_URL"
    key = "dagster_postgres_url" if dagster else "competition_database_url"
    if os.environ.get(variable):
        return os.environ[variable]
    local = read_local_state()
    if local and local.get(key):
        return local[key]
    if local:
        raise SystemExit(
            f"error: the running local start uses {local.get(key + '_redacted')}, which has a"
            f" password: set {variable} to it in this shell"
        )
    raise SystemExit(
        f"error: no database: set {variable} (postgresql://user@host/db), or start the local"
        f" instance with bin/start (it writes {state_dir() / STATE_FILE})"
    )
