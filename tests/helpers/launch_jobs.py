"""A code location of two jobs for the run launcher's deploy test (tests/e2e/test_deploy_launch.py):
``hold`` keeps its run, and so its code server, alive until the test creates the file named by
``LAUNCH_TEST_RELEASE``; ``quick`` ends at once. Loaded by ``dagster api grpc -f``."""

import os
import time
from pathlib import Path

import dagster as dg


@dg.op
def wait_for_release() -> None:
    release = Path(os.environ["LAUNCH_TEST_RELEASE"])
    deadline = time.monotonic() + 300
    while not release.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{release} never appeared")
        time.sleep(0.2)


@dg.op
def done() -> None:
    """Nothing: the run's launch is what the test is about."""


@dg.job
def hold() -> None:
    wait_for_release()


@dg.job
def quick() -> None:
    done()


defs = dg.Definitions(jobs=[hold, quick])
