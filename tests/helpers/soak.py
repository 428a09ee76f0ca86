"""``competition-pipeline soak`` run as a user runs it, for the end-to-end tests that need a soak
(tests/e2e/test_convergence.py, tests/e2e/test_hosts.py): its JSON result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.environment import REPO

#: Seconds the table may take to converge after the last fault clears: two sensor ticks, the
#: backoff a failing window reached (the soak caps it at 40 s), the dead-run bound (30 s in the
#: soak) and the runs themselves on a busy two-core machine.
CONVERGENCE_BOUND = 240


def soak(tmp_path: Path, *args: str, timeout: float = 1500) -> dict:
    """The soak with ``args``, converging within CONVERGENCE_BOUND; its result (it must succeed)."""
    output = tmp_path / "soak.json"
    command = [
        sys.executable,
        "-m",
        "competition_pipeline.tools.cli",
        "soak",
        "--json",
        str(output),
    ]
    completed = subprocess.run(
        [*command, "--timeout", str(CONVERGENCE_BOUND), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert output.exists(), completed.stderr[-4000:]
    result = json.loads(output.read_text())
    print(completed.stdout)
    assert completed.returncode == 0, (result, completed.stderr[-4000:])
    return result
