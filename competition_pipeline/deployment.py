"""What a run worker must share with the code server that created the run: the code and the
rules. When runs execute on other hosts (a Celery worker, a Kubernetes pod), the worker imports
``competition_pipeline.definitions`` with its own files and its own environment; a host left on
an older release, or with another ``FILL_PARTITIONS_START``, would record windows under other
rules than the ones the run was planned with. The code server stamps its fingerprint on the
asset's definition (an op tag, kept in the run's job snapshot); the worker compares it with its
own before it records anything (defs/fill_events.py).

Only values that change what is recorded, or which windows exist, are compared: a worker may
reach the same NATS server or database by another address. No secret is part of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from competition_pipeline.recording.fill_events import RECORDING_VERSION
from competition_pipeline.settings import Settings

PACKAGE = Path(__file__).resolve().parent

#: The settings that decide which windows exist and how a window's rows are derived.
RULES = (
    "partitions_start",
    "fill_source",
    "stream",
    "subject_prefix",
    "lateness_seconds",
    "strict",
    "max_rejects",
    "max_reject_fraction",
    "retry_max",
    "retry_delay_seconds",
)


@functools.cache
def code_digest() -> str:
    """SHA-256 (first 16 hex digits) of the package's Python sources that a run executes."""
    return digest_of(PACKAGE)


def digest_of(package: Path) -> str:
    """The sources under ``package`` by relative path: two hosts with the same release installed
    agree, a host with one of those files changed does not. ``tools/`` (the operator CLI: bench,
    soak, simulator) is left out: no run imports it, and a host's CLI may be patched without
    failing its runs."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "tools":
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def fingerprint(settings: Settings) -> dict[str, str]:
    """The code, the recording rules' version and the rule settings, as strings."""
    values = {"code": code_digest(), "recording_version": str(RECORDING_VERSION)}
    values.update({name: str(getattr(settings, name)) for name in RULES})
    return values


def encode(values: dict[str, str]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def decode(text: str) -> dict[str, str]:
    return json.loads(text)


def mismatch(expected: dict[str, str], actual: dict[str, str]) -> str | None:
    """Which values differ, as ``name: code server's != this worker's``; None when none do."""
    names = sorted(set(expected) | set(actual))
    differing = [
        f"{name}: {expected.get(name, '(unset)')} != {actual.get(name, '(unset)')}"
        for name in names
        if expected.get(name) != actual.get(name)
    ]
    return "; ".join(differing) or None
