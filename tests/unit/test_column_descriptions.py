"""Every column's meaning is written once, in the table definition, and shown in the UI."""

import dagster as dg
import pytest

from competition_pipeline.definitions import defs
from competition_pipeline.store import tables


@pytest.mark.parametrize("table", tables.metadata.sorted_tables, ids=lambda t: t.name)
def test_every_column_of_every_table_says_what_it_means(table) -> None:
    undocumented = [column.name for column in table.columns if not (column.comment or "").strip()]
    assert undocumented == []


@pytest.mark.parametrize(
    ("asset", "table"),
    [
        ("competition_fill_events", tables.fill_events),
        ("competition_standings", tables.competition_standings),
    ],
)
def test_the_assets_columns_tab_shows_each_columns_meaning(asset: str, table) -> None:
    spec = defs.resolve_assets_def(asset).specs_by_key[dg.AssetKey(asset)]
    schema = spec.metadata["dagster/column_schema"]
    assert {c.name: c.description for c in schema.columns} == {
        c.name: c.comment for c in table.columns
    }
    assert spec.metadata["dagster/table_name"] == table.name


def test_recorded_at_says_it_is_the_transactions_start_and_fill_ts_the_event_time() -> None:
    assert "start, not its commit" in tables.fill_events.c.recorded_at.comment
    assert "event time" in tables.fill_events.c.fill_ts.comment
