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


# -- SQL files ------------------------------------------------------------------------------------
