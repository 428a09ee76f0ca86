"""The unit tier: no PostgreSQL, no NATS, no Dagster instance. The fixtures that would start or
reach one are overridden here to fail, so that a test needing a server is moved to
tests/integration rather than slowing the tier that runs first (bin/test)."""

from __future__ import annotations

import pytest


def _no_server(name: str) -> None:
    pytest.fail(f"a unit test asked for {name}: a test that needs a server is an integration test")


@pytest.fixture
def pg_admin_url() -> None:
    _no_server("PostgreSQL (pg_admin_url)")


@pytest.fixture
def nats_url() -> None:
    _no_server("NATS (nats_url)")


@pytest.fixture
def dagster_home() -> None:
    _no_server("a Dagster instance (dagster_home)")
