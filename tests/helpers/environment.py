"""Where the tests run: the repository, and the settings every test process uses (retries are
exercised, without minutes of backoff)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TEST_ENVIRONMENT = {"FILL_RETRY_DELAY_SECONDS": "0.05", "FILL_RETRY_MAX": "1"}
