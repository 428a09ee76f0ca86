"""Where the tests run: the repository, and the settings every test process uses (retries are
exercised, without minutes of backoff)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TEST_ENVIRONMENT = {"FILL_RETRY_DELAY_SECONDS": "0.05", "FILL_RETRY_MAX": "1"}


def require_programs(why: str, *programs: str) -> None:
    """Skip the test where one of ``programs`` (paths) is missing, outside CI; with ``CI=true``
    fail instead, so CI never skips it (.ci/run installs them)."""
    missing = [p for p in programs if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = f"{why} needs {', '.join(missing)} (Debian's packages; see docs/testing.md)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
