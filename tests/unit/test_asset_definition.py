"""The asset as defined, without a run or a server: its metadata's lag for the open hour, and
the column schema, owner and code reference it carries. Runs of it are tested in
tests/integration/test_asset.py."""

from __future__ import annotations

import dagster as dg

from tests.helpers.journal import KEY, WINDOW


def test_lag_is_reported_for_the_open_hour_only() -> None:
    from competition_pipeline.defs.fill_events import report_metadata
    from competition_pipeline.recording.fill_events import WindowReport

    now = WINDOW.start.timestamp() + 1800  # half way through the window: it is open
    report = WindowReport(window=KEY, source="journal", newest_fill_ms=int(now * 1000) - 4000)
    assert report_metadata(report, now=now)["lag_seconds"] == 4.0
    closed = report_metadata(report, now=WINDOW.end.timestamp() + 3600)
    assert "lag_seconds" not in closed and closed["open_hour"] is False


def test_the_asset_carries_its_column_schema_owner_and_code_reference() -> None:
    from competition_pipeline.definitions import defs
    from competition_pipeline.store.database import fill_events

    spec = defs.resolve_assets_def("competition_fill_events").specs_by_key[
        dg.AssetKey("competition_fill_events")
    ]
    schema = spec.metadata["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchema)
    assert [c.name for c in schema.columns] == [c.name for c in fill_events.columns]
    assert {c.name for c in schema.columns if not c.constraints.nullable} >= {"trade_id", "wallet"}
    assert spec.owners == ["team:trading-competition"]
    assert "dagster/code_references" in spec.metadata


def test_the_recording_version_is_the_assets_code_version_and_in_every_materialization() -> None:
    from competition_pipeline.definitions import defs
    from competition_pipeline.defs.fill_events import report_metadata
    from competition_pipeline.recording.fill_events import RECORDING_VERSION, WindowReport

    spec = defs.resolve_assets_def("competition_fill_events").specs_by_key[
        dg.AssetKey("competition_fill_events")
    ]
    assert spec.code_version == str(RECORDING_VERSION)
    report = WindowReport(window=KEY, source="journal")
    assert report_metadata(report)["recording_version"] == RECORDING_VERSION
    job = defs.resolve_job_def("competition_fill_rebuild_job")
    assert job.partitions_def == defs.resolve_assets_def("competition_fill_events").partitions_def


def test_the_follower_runs_in_a_pool_of_its_own() -> None:
    """The open hour's follower job's only op is in pool competition_live_hour; the asset's step
    in competition_db: an hour-long follower never holds a slot closed windows need."""
    from competition_pipeline.definitions import defs
    from competition_pipeline.defs.live_hour import LIVE_HOUR_JOB, LIVE_HOUR_POOL
    from competition_pipeline.defs.partitions import DATABASE_POOL

    follower = defs.get_job_def(LIVE_HOUR_JOB)
    assert {node.definition.pool for node in follower.graph.node_dict.values()} == {LIVE_HOUR_POOL}
    assert LIVE_HOUR_POOL != DATABASE_POOL
    # The sensor alone asks for a follower: Dagster's run retries never make a second one.
    assert follower.tags["dagster/max_retries"] == "0"
    asset = defs.resolve_assets_def("competition_fill_events")
    assert asset.op.pool == DATABASE_POOL
