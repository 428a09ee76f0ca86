"""Debian's Chromium for the Playwright browser tests: the executable (installed with apt-get
where missing) and the flags it runs with on this closed network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str:
    """Debian's Chromium, installed with apt-get where missing; a failure is a failure (never a
    skip): the browser tests are part of CI. Playwright's own browser download is never used."""
    if not CHROMIUM.exists():
        command = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(
                f"{CHROMIUM} is missing and `{command}` failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
    return str(CHROMIUM)
