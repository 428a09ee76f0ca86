"""docs/operations.md's example files, read without a server: the production ``dagster.yaml``
keeps the local storage classes. That the examples run is tested in
tests/integration/test_operations_docs.py."""

from __future__ import annotations

import yaml

from tests.helpers.environment import REPO

EXAMPLES = REPO / "docs" / "examples"


def test_production_storage_is_the_local_storage() -> None:
    """The guide tells operators not to change the storage classes: both files must agree."""
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    production = yaml.safe_load((EXAMPLES / "dagster.production.yaml").read_text())
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert production[key] == local[key], key
        assert production[key]["module"] == "competition_pipeline.instance_storage"


def test_the_celery_hosts_share_the_local_storage_and_pools() -> None:
    """The service host's and every worker's instance write the same storage; the worker's
    pools bound window loads with the service host's limit."""
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    service = yaml.safe_load((EXAMPLES / "dagster.celery.yaml").read_text())
    worker = yaml.safe_load((EXAMPLES / "dagster.celery-worker.yaml").read_text())
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert service[key] == worker[key] == local[key], key
    assert worker["concurrency"]["pools"] == service["concurrency"]["pools"]
    assert "run_launcher" not in worker
    # The broker URL (it holds a password) comes from the environment, never the file.
    assert service["run_launcher"]["config"]["broker"] == {"env": "CELERY_BROKER_URL"}


# -- SQL files ------------------------------------------------------------------------------------
