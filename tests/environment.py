"""Settings every test process uses: retries are exercised, without minutes of backoff."""

TEST_ENVIRONMENT = {"FILL_RETRY_DELAY_SECONDS": "0.05", "FILL_RETRY_MAX": "1"}
