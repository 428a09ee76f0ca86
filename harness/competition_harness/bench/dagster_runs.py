"""The figures that go through Dagster: f, a ranged backfill as one run beside Dagster's own floor,
and h, the user path (``dagster asset materialize``) beside the no-op floor of ``bench_floor``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from competition_harness.bench.common import (
    BENCH_WINDOW,
    Databases,
    postgres_instance,
)
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.fill_events import WindowReport
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import simulate
from competition_pipeline.tools.log import log
from competition_pipeline.tools.progress import Progress


def _floor_definitions() -> list:
    """Dagster's own cost of a ranged run: an asset with the same partitions, backfill policy
    and checks that does no work, yielding per window what the real asset yields (one
    materialization with the same metadata keys, one evaluation of each check)."""
    import dagster as dg

    from competition_harness.bench_floor import PARTITIONS, noop_checks
    from competition_pipeline.defs.fill_events import report_metadata
    from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
    from competition_pipeline.recording.checks import BLOCKING

    @dg.asset(
        name=FILL_EVENTS_KEY.path[-1],
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
    )
    def floor(context):  # noqa: ANN001, ANN202 (dagster is imported locally: no annotations)
        for key in context.partition_keys:
            metadata = report_metadata(WindowReport(window=key, source="floor"))
            yield dg.AssetMaterialization(
                asset_key=FILL_EVENTS_KEY, partition=key, metadata=metadata
            )
            for name, blocking in BLOCKING.items():
                yield dg.AssetCheckEvaluation(
                    asset_key=FILL_EVENTS_KEY,
                    check_name=name,
                    passed=True,
                    blocking=blocking,
                    partition=key,
                )

    return [floor, *noop_checks()]


def backfill(url: str, databases: Databases, home: Path, days: int, fills_per_hour: int) -> dict:
    import dagster as dg

    from competition_pipeline import settings
    from competition_pipeline.defs.checks import build_checks
    from competition_pipeline.defs.fill_events import build_fill_asset
    from competition_pipeline.defs.resources import (
        CompetitionDatabase,
        FillSourceResource,
        RecordingPolicy,
    )

    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp)
        first = Window.from_key("2026-10-01-00:00")
        windows = [Window(first.start + i * HOUR) for i in range(days * 24)]
        sim = simulate.FillSimulator(seed=11, trade_id_base=10**15)
        expected_rows = 0
        progress = Progress("writing the backfill's hours", log)
        for done, window in enumerate(windows, start=1):
            hour = simulate.write_hour(journal, window, fills_per_hour, sim=sim)
            expected_rows += hour.rows_expected
            progress(done, len(windows))
        tags = {
            "dagster/asset_partition_range_start": windows[0].key,
            "dagster/asset_partition_range_end": windows[-1].key,
        }
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

        def timed(definitions: list, resources: dict) -> tuple[float, int, int]:
            with postgres_instance(home, databases.new("instance")) as instance:
                started = time.perf_counter()
                result = dg.materialize(
                    definitions, instance=instance, resources=resources, run_config=quiet, tags=tags
                )
                seconds = time.perf_counter() - started
                assert result.success
                key = dg.AssetKey("competition_fill_events")
                materialized = len(instance.get_materialized_partitions(key))
                evaluations = len(result.get_asset_check_evaluations())
            return seconds, materialized, evaluations

        resources = {
            "database": CompetitionDatabase(url=url),
            "fill_source": FillSourceResource(root=str(journal)),
            "policy": RecordingPolicy(),
        }
        config = settings.current()
        checks = build_checks(config)
        seconds, materialized, evaluations = timed([build_fill_asset(config), *checks], resources)
        floor_seconds, floor_materialized, floor_evaluations = timed(_floor_definitions(), {})
    assert materialized == floor_materialized == len(windows)
    assert evaluations == floor_evaluations == 3 * len(windows)
    return {
        "windows": len(windows),
        "runs": 1,
        "rows": expected_rows,
        "seconds": seconds,
        "rows_per_second": expected_rows / seconds,
        "check_evaluations": evaluations,
        "instance_storage": "postgresql",
        "dagster_floor_seconds": floor_seconds,
        "ms_per_window_beyond_floor": (seconds - floor_seconds) / len(windows) * 1000,
    }


def _step_seconds(home: Path, instance_url: str) -> dict[str, float]:
    """The step times of the instance's latest run, from its event log (each STEP_SUCCESS
    carries the step's duration): the CLI's stderr lost a step's line once, the log does not."""
    import dagster as dg

    with postgres_instance(home, instance_url) as instance:
        (latest,) = instance.get_runs(limit=1)
        steps = {}
        for entry in instance.all_logs(latest.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
            event = entry.dagster_event
            steps[event.step_key] = event.event_specific_data.duration_ms / 1000
    return steps


def user_path(databases: Databases, home: Path, journal: Path) -> dict:
    """(h) ``dagster asset materialize`` of the bench window with its checks, in a subprocess
    on PostgreSQL instance storage against a fresh competition database: first, then unchanged."""
    url = databases.new("h")
    instance_url = databases.new("h_instance")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": instance_url,
        "COMPETITION_DATABASE_URL": url,
        "FILL_JOURNAL_DIR": str(journal),
    }

    def command(module: str) -> list[str]:
        return [
            str(Path(sys.executable).with_name("dagster")),
            *("asset", "materialize", "-m", module),
            *("--select", "competition_fill_events", "--partition", BENCH_WINDOW.key),
        ]

    runs = {}
    for what, module in (
        ("first", "competition_pipeline.definitions"),
        ("unchanged", "competition_pipeline.definitions"),
        ("floor", "competition_harness.bench_floor"),  # Dagster's own cost of the same path
    ):
        started = time.perf_counter()
        done = subprocess.run(command(module), env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"h ({what}) failed: {dburl.scrub(done.stderr[-2000:], url)}")
        steps = _step_seconds(home, instance_url)
        runs[what] = {
            "seconds": seconds,
            "steps": steps,
            "outside_steps_seconds": seconds - sum(steps.values()),
        }
    with CompetitionStore(url).connect() as conn:
        rows = conn.execute("SELECT count(*) FROM competition_fill_events").fetchone()[0]  # type: ignore[index]
    return {"rows": rows, "rows_per_second": rows / runs["first"]["seconds"], **runs}
