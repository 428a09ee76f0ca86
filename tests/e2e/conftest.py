"""The end-to-end tier's fixtures: ``dagster dev`` (webserver and daemon as processes) on the
test's databases and journal. End-to-end tests start Dagster's processes (or the local start)
and talk to them as a user or an operator would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from competition_pipeline.store.database import CompetitionStore
from tests.helpers.dagster_dev import DagsterDev, dagster_dev_env, run_dagster_dev

#: The tests that take minutes (a soak, a module's ``dagster dev``, a local start, the bench's
#: worker hosts), longest first, by node id prefix. The workers (bin/test's ``-n``) start them
#: first, so that none is left running one at the end while the others idle; only the order
#: changes, every test runs, and a module's tests keep their order.
LONGEST_FIRST = (
    "tests/e2e/test_browser.py",
    "tests/e2e/test_rebuild_ui.py",
    "tests/e2e/test_convergence.py::test_the_chaos_soak",
    "tests/e2e/test_bench.py::test_bench_figure_w",
    "tests/e2e/test_convergence.py::test_a_deploy",
    "tests/e2e/test_hosts.py",
    "tests/e2e/test_local_start.py",
    "tests/e2e/test_freshness.py",
    "tests/e2e/test_daemon_restart.py",
    "tests/e2e/test_convergence.py::test_the_table_converges",
    "tests/e2e/test_check_partitions.py",
    "tests/e2e/test_bench.py",
    "tests/e2e/test_daemon_e2e.py",
    "tests/e2e/test_dg.py::test_dg_dev",
    "tests/e2e/test_history.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        prefixes = enumerate(LONGEST_FIRST)
        return next((i for i, p in prefixes if item.nodeid.startswith(p)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a rank is the collection's


@pytest.fixture
def dagster_dev(
    dagster_home: Path, database_url: str, journal: Path, tmp_path: Path, request
) -> Iterator[DagsterDev]:
    """``dagster dev`` on the test's databases and journal; the journal sensor runs unless the
    test is marked ``sensor_off`` (a backfill test must not race the sensor for its windows)."""
    CompetitionStore(database_url).ensure_schema()  # the deploy step `competition-pipeline schema`
    sensor_running = request.node.get_closest_marker("sensor_off") is None
    env = dagster_dev_env(database_url, journal, sensor_running=sensor_running)
    with run_dagster_dev(env, tmp_path / "dagster-dev.log") as dev:
        yield dev
