"""Dagster instance storage on PostgreSQL that accepts any PostgreSQL URL form.

dagster-postgres hands its URL to SQLAlchemy; SQLAlchemy 2.1 maps a bare ``postgresql://`` to
psycopg 3, and dagster-postgres' storage then fails every run. These thin subclasses turn
whatever the user passes (``DAGSTER_POSTGRES_URL``) into ``postgresql+psycopg2://`` before
dagster-postgres sees it; the rest is dagster-postgres' own code. ``dagster.yaml`` names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster_postgres import (
    PostgresEventLogStorage as _EventLogStorage,
)
from dagster_postgres import (
    PostgresRunStorage as _RunStorage,
)
from dagster_postgres import (
    PostgresScheduleStorage as _ScheduleStorage,
)
from dagster_postgres.utils import pg_url_from_config

from competition_pipeline.store import dburl


def psycopg2_config(config_value: Mapping[str, Any]) -> dict[str, Any]:
    """The storage config with its URL (given as a URL or as ``postgres_db``) on psycopg2."""
    url = dburl.with_driver(pg_url_from_config(config_value), "psycopg2")
    rest = {k: v for k, v in config_value.items() if k not in ("postgres_url", "postgres_db")}
    return {**rest, "postgres_url": url}


class RunStorage(_RunStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value):  # type: ignore[override]
        return super().from_config_value(inst_data, psycopg2_config(config_value))


class EventLogStorage(_EventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value):  # type: ignore[override]
        return super().from_config_value(inst_data, psycopg2_config(config_value))


class ScheduleStorage(_ScheduleStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value):  # type: ignore[override]
        return super().from_config_value(inst_data, psycopg2_config(config_value))
