"""Benchmark: the pipeline against a plain COPY of the same rows, measured in one run.

    python -m competition_pipeline.tools.bench [--fills 1000000] [--json bench.json]

Figures (one run, one database, so they are comparable as ratios on a noisy machine):

a. plain COPY of the window's rows into an empty copy of ``competition_fill_events`` (baseline),
   the rows written with psycopg's ``write_row`` from ready-made tuples; a'. the same rows as
   COPY text the server formatted itself, which measures the server alone; and a2. the same rows
   with their keys COPYed first into an empty copy of ``competition_fill_keys``, in one
   transaction: what the product must write at the least (its key registry keeps
   ``(trade_id, wallet)`` unique across the monthly partitions), the fair baseline for (b);
b. the first recording of one window of N fills through the asset's code path
   (``pipeline.record_window``: read + parse + validate + rows + load), in a child process;
c. recording the unchanged window again;
d. the peak RSS of the child process that ran (b);
e. one sensor tick (scan + decision) over a journal of 10,000 hour directories;
f. a 30-day hourly backfill as one Dagster run (``materialize`` of the asset and its checks over
   the partition range) on PostgreSQL instance storage, as deployed (a fresh database, the
   storage classes of ``competition_pipeline.instance_storage``), beside Dagster's own floor
   measured in the same run: a no-op asset over the same range yielding the same events (one
   materialization and three check evaluations a window) on another fresh instance database;
h. the whole user path: ``dagster asset materialize`` of the (a) window in a subprocess, with its
   checks, on PostgreSQL instance storage, first and unchanged, with the time of each step.
g. with ``--stored-rows N``: the first recording of a window of ``--fills`` fills into an empty
   table, then of another such window once N rows are stored in the months before it (own
   database; the rows generated server-side, untimed): the ratio shows whether the load rate
   stays flat as the table grows.

Without ``--database-url`` it runs on a throwaway embedded PostgreSQL; with one, it creates and
drops a database of its own there (the role needs CREATEDB) and never touches existing tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Context, Decimal
from pathlib import Path

import psycopg

from competition_pipeline.fills.journal import JournalSource, scan, window_dir
from competition_pipeline.fills.rows import ROW_FIELDS
from competition_pipeline.fills.source import ReadStats
from competition_pipeline.fills.windows import HOUR, Window, utc_from_ms
from competition_pipeline.recording.fill_events import WindowReport, parse_window, record_window
from competition_pipeline.recording.follow import Backoff, FollowCursor, journal_behind, plan
from competition_pipeline.store import dburl
from competition_pipeline.store.database import CommittedWindow, CompetitionStore, fill_events
from competition_pipeline.tools import embedded, simulate
from competition_pipeline.tools.progress import Progress, stderr_log

BENCH_WINDOW = Window.from_key("2026-11-20-03:00")


_log = stderr_log("bench")


#: (a) holds its rows in memory to time the COPY alone: it uses the window's first 2M rows (a
#: COPY's rate does not depend on the table's size, and 10M row tuples would not fit).
PLAIN_COPY_MAX_ROWS = 2_000_000
#: The columns (a) COPYs, in the table's order: all but ``recorded_at`` (the server's clock).
_PLAIN_COLUMNS = tuple(c for c in fill_events.columns.keys() if c != "recorded_at")
#: a2's first COPY: the keys into the registry's empty copy.
_KEYS_COPY = "COPY bench_plain_keys (trade_id, wallet, fill_ts) FROM STDIN"


def _final_rows(journal: Path, limit: int) -> list[tuple]:
    """The window's first ``limit`` or so rows as the table holds them, in ``_PLAIN_COLUMNS``
    order: the staged rows (``rows.ROW_FIELDS``) with the columns the loader computes (notional,
    fill_ts, window_start) computed here, exactly."""
    exact = Context(prec=200)
    rows: list[tuple] = []
    report = WindowReport(BENCH_WINDOW.key, "bench")
    for batch, _ in parse_window(JournalSource(journal), BENCH_WINDOW, report, ReadStats()):
        if len(rows) >= limit:
            break
        for staged in batch:
            row = dict(zip(ROW_FIELDS, staged, strict=True))
            row["notional"] = str(exact.multiply(Decimal(row["price"]), Decimal(row["size"])))
            row["fill_ts"] = utc_from_ms(row["fill_ts_ms"]).isoformat()
            row["window_start"] = BENCH_WINDOW.start
            rows.append(tuple(row[c] for c in _PLAIN_COLUMNS))
    return rows


def _timed_copy(
    conn: psycopg.Connection, sql: str, items: list, *, text: bool, commit: bool = True
) -> float:
    """Seconds to COPY ``items`` (row tuples, or with ``text`` blocks of COPY text) and, unless
    told not to (a COPY the next one's transaction must include), commit."""
    started = time.perf_counter()
    with conn.cursor().copy(sql) as copy:
        put = copy.write if text else copy.write_row
        for item in items:
            put(item)
    if commit:
        conn.commit()
    return time.perf_counter() - started


def plain_copy(url: str, journal: Path) -> dict:
    """(a) COPY the window's final rows (computed beforehand, untimed) into an empty table copy."""
    rows = _final_rows(journal, PLAIN_COPY_MAX_ROWS)
    copy_in = f"COPY bench_plain_copy ({', '.join(_PLAIN_COLUMNS)}) FROM STDIN"
    with CompetitionStore(url).connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_plain_copy")
        conn.execute("CREATE TABLE bench_plain_copy (LIKE competition_fill_events INCLUDING ALL)")
        conn.commit()
        seconds = _timed_copy(conn, copy_in, rows, text=False)
        # a'. The same rows as COPY text the server wrote itself (untimed), loaded again into the
        # emptied table: the server's own limit, with no Python per row at all.
        copy_out = f"COPY bench_plain_copy ({', '.join(_PLAIN_COLUMNS)}) TO STDOUT"
        with conn.cursor().copy(copy_out) as copy:
            text = [bytes(block) for block in copy]
        conn.execute("TRUNCATE bench_plain_copy")
        conn.commit()
        text_seconds = _timed_copy(conn, copy_in, text, text=True)
        # a2. The rows and their keys, as the product must write them: the same COPY into the
        # emptied table, after a COPY of (trade_id, wallet, fill_ts) into an empty copy of the
        # key registry, in one transaction.
        key_of = [_PLAIN_COLUMNS.index(c) for c in ("trade_id", "wallet", "fill_ts")]
        keys = [tuple(row[i] for i in key_of) for row in rows]
        conn.execute("TRUNCATE bench_plain_copy")
        conn.execute("DROP TABLE IF EXISTS bench_plain_keys")
        conn.execute("CREATE TABLE bench_plain_keys (LIKE competition_fill_keys INCLUDING ALL)")
        conn.commit()
        registry_seconds = _timed_copy(conn, _KEYS_COPY, keys, text=False, commit=False)
        registry_seconds += _timed_copy(conn, copy_in, rows, text=False)
        conn.execute("DROP TABLE bench_plain_copy")
        conn.execute("DROP TABLE bench_plain_keys")
        conn.commit()
    return {
        "rows": len(rows),
        "seconds": seconds,
        "rows_per_second": len(rows) / seconds,
        "preformatted_seconds": text_seconds,
        "preformatted_rows_per_second": len(rows) / text_seconds,
        "with_registry_seconds": registry_seconds,
        "with_registry_rows_per_second": len(rows) / registry_seconds,
    }


def _child_record(url: str, journal: str, window: Window = BENCH_WINDOW) -> None:
    """Runs in a child process, so that its peak RSS is the recording's own."""
    report = record_window(JournalSource(journal), CompetitionStore(url), window)
    print(json.dumps({"report": report.as_dict(), "peak_rss_mib": _peak_rss_mib()}))


def _peak_rss_mib() -> float:
    """This process image's peak RSS (VmHWM): unlike ru_maxrss, it does not carry over the
    forking parent's memory across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record_in_child(url: str, journal: Path, what: str, window: Window = BENCH_WINDOW) -> dict:
    command = [
        sys.executable,
        "-m",
        "competition_pipeline.tools.bench",
        "--child",
        url,
        str(journal),
    ]
    command += [window.key]
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                _log(f"{what}: still recording ({time.perf_counter() - started:.0f}s)")
    if child.returncode != 0:
        raise RuntimeError(f"recording failed: {dburl.scrub(stderr[-2000:], url)}")
    result = json.loads(stdout.strip().splitlines()[-1])
    report = result["report"]
    rows = report["rows_inserted"] + report["rows_already_present"]
    return {
        "rows": rows,
        "rows_inserted": report["rows_inserted"],
        "seconds": report["seconds"],
        "rows_per_second": rows / report["seconds"],
        "peak_rss_mib": result["peak_rss_mib"],
    }


def sensor_tick(directories: int) -> dict:
    """One tick's decision over ``directories`` hours, every one committed as it is (the common
    case: the whole journal compared with the committed offsets, nothing behind)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = Window.from_key("2025-01-01-00:00")
        for i in range(directories):
            directory = window_dir(root, Window(first.start + i * HOUR))
            directory.mkdir(parents=True)
            (directory / "seg-00001.jsonl.gz").write_bytes(b"")
            (directory / "seg-00002.jsonl").write_bytes(b"")
        committed = {
            state.window: CommittedWindow(
                {s.relative: {"size": s.size, "mtime_ns": s.mtime_ns} for s in state.segments},
                {},
                "2025-01-01T00:00:00+00:00",
            )
            for state in scan(root)[0]
        }
        started = time.perf_counter()
        states, _ = scan(root)
        behind = {
            s.window: reason
            for s in states
            if (reason := journal_behind(s, committed.get(s.window))) is not None
        }
        decision = plan(
            behind,
            committed,
            FollowCursor(),
            now_ns=time.time_ns(),
            live=set(),
            first=first,
            last=Window(first.start + directories * HOUR),
            backoff=Backoff(),
            max_requests=24,
        )
        seconds = time.perf_counter() - started
    return {
        "directories": directories,
        "seconds": seconds,
        "behind": len(behind),
        "cursor_bytes": len(decision.cursor.to_json()),
    }


_INSTANCE_YAML = """
run_storage:
  module: competition_pipeline.instance_storage
  class: RunStorage
  config: {postgres_url: {env: DAGSTER_POSTGRES_URL}}
event_log_storage:
  module: competition_pipeline.instance_storage
  class: EventLogStorage
  config: {postgres_url: {env: DAGSTER_POSTGRES_URL}}
schedule_storage:
  module: competition_pipeline.instance_storage
  class: ScheduleStorage
  config: {postgres_url: {env: DAGSTER_POSTGRES_URL}}
telemetry: {enabled: false}
"""


class _Databases:
    """Fresh databases on the bench's server, dropped at the end."""

    def __init__(self, admin: str) -> None:
        self.admin, self.names = admin, []

    def new(self, purpose: str) -> str:
        name = f"competition_bench_{purpose}_{uuid.uuid4().hex[:8]}"
        embedded.create_database(self.admin, name)
        self.names.append(name)
        return embedded.database_url(self.admin, name)

    def drop(self) -> None:
        for name in self.names:
            embedded.drop_database(self.admin, name)


def _dagster_home(directory: Path) -> Path:
    """A DAGSTER_HOME whose storage is PostgreSQL at DAGSTER_POSTGRES_URL, as deployed."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dagster.yaml").write_text(_INSTANCE_YAML)
    return directory


def _postgres_instance(home: Path, instance_url: str):  # noqa: ANN202 (a DagsterInstance)
    import dagster as dg

    os.environ["DAGSTER_POSTGRES_URL"] = instance_url
    try:
        return dg.DagsterInstance.from_config(str(home))
    finally:
        del os.environ["DAGSTER_POSTGRES_URL"]


def _floor_definitions() -> list:
    """Dagster's own cost of a ranged run: an asset with the same partitions, backfill policy
    and checks that does no work, yielding per window what the real asset yields (one
    materialization with the same metadata keys, one evaluation of each check)."""
    import dagster as dg

    from competition_pipeline.defs.fill_events import report_metadata
    from competition_pipeline.defs.partitions import FILL_EVENTS_KEY
    from competition_pipeline.recording.checks import BLOCKING
    from competition_pipeline.tools.bench_floor import PARTITIONS, noop_checks

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


def backfill(url: str, databases: _Databases, home: Path, days: int, fills_per_hour: int) -> dict:
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
        progress = Progress("writing the backfill's hours", _log)
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
            with _postgres_instance(home, databases.new("instance")) as instance:
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


G_EMPTY = Window.from_key("2026-11-21-03:00")
G_STORED = Window.from_key("2026-11-21-04:00")
G_STORED_DAYS = 60  # the stored rows are spread over the days before G_STORED (3 partitions)
_G_BATCH = 1_000_000

# N rows, as the pipeline stores them: two per fill (taker, maker), trade ids below every window's
# (ids grow with time, as the exchange's do), 50 wallets, fill times spread evenly over the days
# before the measured window; each key registered in competition_fill_keys in the same statement.
_G_FILL = """
WITH r AS (
    SELECT i / 2 + 1 AS trade_id,
           '0x' || lpad(to_hex(((i / 2) * 7 + (i %% 2) * 13) %% 50), 40, '0') AS wallet,
           CASE WHEN i %% 2 = 0 THEN 'taker' ELSE 'maker' END AS role,
           %(start)s::timestamptz + (i / 2) * %(step)s * interval '1 microsecond' AS fill_ts
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) i
), k AS (
    INSERT INTO competition_fill_keys (trade_id, wallet, fill_ts)
    SELECT trade_id, wallet, fill_ts FROM r
)
INSERT INTO competition_fill_events (trade_id, wallet, role, side, counterparty, is_self_trade,
    symbol, price, size, notional, fee, source_type, taker_order_id, maker_order_id, fill_ts,
    window_start)
SELECT trade_id, wallet, role, 'Buy', '0x' || repeat('e', 40), false, 'BTC-20270326-100000-C',
       1520.5, 0.25, 380.125, 0.38, 'orderbook', trade_id * 2, trade_id * 2 + 1, fill_ts,
       date_trunc('hour', fill_ts)
FROM r"""


def _fill_stored(url: str, stored_rows: int) -> None:
    """Store ``stored_rows`` rows in the months before G_STORED (untimed), then VACUUM ANALYZE."""
    start = G_STORED.start - dt.timedelta(days=G_STORED_DAYS)
    step = int(G_STORED_DAYS * 86_400 * 1e6 / max(stored_rows // 2, 1))
    progress = Progress("g. storing rows", _log)
    with CompetitionStore(url).connect() as conn:
        conn.autocommit = True
        day = start.date().replace(day=1)
        while day <= G_STORED.start.date():
            conn.execute("SELECT competition_create_month(%s)", (day,))
            day = (day + dt.timedelta(days=32)).replace(day=1)
        for lo in range(0, stored_rows, _G_BATCH):
            hi = min(lo + _G_BATCH, stored_rows) - 1
            conn.execute(_G_FILL, {"start": start, "step": step, "lo": lo, "hi": hi})
            progress(hi + 1, stored_rows)
        conn.execute("VACUUM ANALYZE competition_fill_events")
        conn.execute("VACUUM ANALYZE competition_fill_keys")
        try:  # no checkpoint of the fill's writes in the middle of the timed recording
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            _log("g: no CHECKPOINT privilege (pg_checkpoint); a checkpoint may fall into g")


def stored_growth(admin: str | None, fills: int, stored_rows: int) -> dict:
    """(g) First recording into an empty table vs into one of ``stored_rows`` rows, one run."""
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if not admin:
            server = embedded.start(Path(tmp) / "pg", databases=())
            admin = server.url("postgres")
        name = f"competition_bench_g_{uuid.uuid4().hex[:8]}"
        embedded.create_database(admin, name)
        url = embedded.database_url(admin, name)
        try:
            CompetitionStore(url).ensure_schema()
            journal = Path(tmp) / "journal"
            # A first, small recording warms the new database (its first COPY is ~2x slower).
            warm = Window(G_EMPTY.start - HOUR)
            simulate.write_hour(journal, warm, min(fills, 10_000))
            record_in_child(url, journal, "g warm-up", warm)
            for window in (G_EMPTY, G_STORED):
                simulate.write_hour(journal, window, fills)
            _log("g. first recording into an empty table")
            empty = record_in_child(url, journal, "g empty", G_EMPTY)
            _log(f"g. storing {stored_rows:,} rows")
            _fill_stored(url, stored_rows)
            _log(f"g. first recording at {stored_rows:,} stored rows")
            stored = record_in_child(url, journal, "g stored", G_STORED)
        finally:
            embedded.drop_database(admin, name)
            if server is not None:
                server.stop()
    return {
        "stored_rows": stored_rows,
        "empty": empty,
        "stored": stored,
        "ratio_rows_per_second": stored["rows_per_second"] / empty["rows_per_second"],
    }


def g_table(g: dict) -> str:
    return "\n".join(
        [
            f"{'g. first recording, empty table':<44} {g['empty']['rows']:>10,} "
            f"{g['empty']['seconds']:>9.2f} {g['empty']['rows_per_second']:>10,.0f}",
            f"{'g. first recording, ' + format(g['stored_rows'], ',') + ' rows stored':<44} "
            f"{g['stored']['rows']:>10,} {g['stored']['seconds']:>9.2f} "
            f"{g['stored']['rows_per_second']:>10,.0f}",
            f"g stored/empty rows/s {g['ratio_rows_per_second']:.2f}",
        ]
    )


def _step_seconds(home: Path, instance_url: str) -> dict[str, float]:
    """The step times of the instance's latest run, from its event log (each STEP_SUCCESS
    carries the step's duration): the CLI's stderr lost a step's line once, the log does not."""
    import dagster as dg

    with _postgres_instance(home, instance_url) as instance:
        (latest,) = instance.get_runs(limit=1)
        steps = {}
        for entry in instance.all_logs(latest.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
            event = entry.dagster_event
            steps[event.step_key] = event.event_specific_data.duration_ms / 1000
    return steps


def user_path(databases: _Databases, home: Path, journal: Path) -> dict:
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
        ("floor", "competition_pipeline.tools.bench_floor"),  # Dagster's own cost of the same path
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


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        admin = args.database_url
        if not admin:
            _log("starting an embedded PostgreSQL")
            server = embedded.start(Path(tmp) / "pg", databases=())
            admin = server.url("postgres")
        databases = _Databases(admin)
        home = _dagster_home(Path(tmp) / "dagster_home")
        try:
            url = databases.new("main")
            CompetitionStore(url).ensure_schema()
            journal = Path(tmp) / "journal"
            _log(f"writing a journal window of {args.fills:,} fills")
            written = simulate.write_hour(
                journal, BENCH_WINDOW, args.fills, progress=Progress("writing the journal", _log)
            )
            _log("a. plain COPY baseline")
            a = plain_copy(url, journal)
            _log("b. first recording (child process)")
            b = record_in_child(url, journal, "b")
            _log("c. recording the unchanged window again")
            c = record_in_child(url, journal, "c")
            _log(f"e. sensor tick over {args.hour_directories:,} hour directories")
            e = sensor_tick(args.hour_directories)
            _log(f"f. {args.backfill_days}-day backfill as one run")
            f = backfill(url, databases, home, args.backfill_days, args.backfill_fills_per_hour)
            _log("h. dagster asset materialize of the window with its checks (subprocess)")
            h = user_path(databases, home, journal)
        finally:
            databases.drop()
            if server is not None:
                server.stop()
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "fills": written.fills,
        "a_plain_copy": a,
        "b_first_recording": b,
        "c_rerun_unchanged": c,
        "d_peak_rss_mib": b["peak_rss_mib"],
        "e_sensor_tick": e,
        "f_backfill": f,
        "h_user_path": h,
        "ratios": {
            "b_over_a_rows_per_second": b["rows_per_second"] / a["rows_per_second"],
            "b_over_a_preformatted_rows_per_second": b["rows_per_second"]
            / a["preformatted_rows_per_second"],
            "b_over_a2_rows_per_second": b["rows_per_second"] / a["with_registry_rows_per_second"],
            "c_over_b_seconds": c["seconds"] / b["seconds"],
            "f_over_b_rows_per_second": f["rows_per_second"] / b["rows_per_second"],
            "h_first_over_a_rows_per_second": h["rows_per_second"] / a["rows_per_second"],
            "h_unchanged_over_first_seconds": h["unchanged"]["seconds"] / h["first"]["seconds"],
            "h_floor_over_first_seconds": h["floor"]["seconds"] / h["first"]["seconds"],
        },
    }


PREFORMATTED = "a'. plain COPY of server-formatted text"
A2 = "a2. plain COPY into the table and its registry"


def table(result: dict) -> str:
    a, b, c, e, f, h = (
        result[k]
        for k in (
            "a_plain_copy",
            "b_first_recording",
            "c_rerun_unchanged",
            "e_sensor_tick",
            "f_backfill",
            "h_user_path",
        )
    )
    ratios = result["ratios"]
    lines = [
        f"{'figure':<44} {'rows':>10} {'seconds':>9} {'rows/s':>10}",
        f"{'a. plain COPY (baseline)':<44} {a['rows']:>10,} {a['seconds']:>9.2f} "
        f"{a['rows_per_second']:>10,.0f}",
        f"{PREFORMATTED:<44} {a['rows']:>10,} "
        f"{a['preformatted_seconds']:>9.2f} {a['preformatted_rows_per_second']:>10,.0f}",
        f"{A2:<44} {a['rows']:>10,} "
        f"{a['with_registry_seconds']:>9.2f} {a['with_registry_rows_per_second']:>10,.0f}",
        f"{'b. first recording, asset code path':<44} {b['rows']:>10,} {b['seconds']:>9.2f} "
        f"{b['rows_per_second']:>10,.0f}",
        # No rows/s for c: it inserts nothing and reads nothing, a rate would mean nothing.
        f"{'c. re-recording the unchanged window':<44} {c['rows']:>10,} {c['seconds']:>9.3f}",
        f"{'d. peak RSS of b':<44} {result['d_peak_rss_mib']:>10.0f} MiB",
        f"{'e. sensor tick, ' + format(e['directories'], ',') + ' hour directories':<44} "
        f"{'':>10} {e['seconds']:>9.3f}",
        f"{'f. ' + str(f['windows']) + '-window backfill, one run':<44} {f['rows']:>10,} "
        f"{f['seconds']:>9.2f} {f['rows_per_second']:>10,.0f}",
        f"{'   Dagster floor (no-op asset, same events)':<44} {'':>10} "
        f"{f['dagster_floor_seconds']:>9.2f}",
        f"{'h. dagster asset materialize + checks':<44} {h['rows']:>10,} "
        f"{h['first']['seconds']:>9.2f} {h['rows_per_second']:>10,.0f}",
        f"{'   unchanged':<44} {'':>10} {h['unchanged']['seconds']:>9.2f}",
        f"{'   Dagster floor (no-op asset + checks)':<44} {'':>10} {h['floor']['seconds']:>9.2f}",
        "",
        f"b/a rows/s {ratios['b_over_a_rows_per_second']:.2f}   "
        f"c/b time {ratios['c_over_b_seconds']:.2f}   "
        f"f/b rows/s {ratios['f_over_b_rows_per_second']:.2f}   "
        f"b/a' rows/s {ratios['b_over_a_preformatted_rows_per_second']:.2f}   "
        f"b/a2 rows/s {ratios['b_over_a2_rows_per_second']:.2f}",
        f"f beyond its floor {f['ms_per_window_beyond_floor']:.1f} ms/window   "
        f"h/a rows/s {ratios['h_first_over_a_rows_per_second']:.2f}   "
        f"h unchanged/first {ratios['h_unchanged_over_first_seconds']:.2f}   "
        f"h floor/first {ratios['h_floor_over_first_seconds']:.2f}",
        *(
            f"h {what} steps: "
            + ", ".join(f"{k} {v:.2f}s" for k, v in h[what]["steps"].items())
            + f", outside steps {h[what]['outside_steps_seconds']:.2f}s"
            for what in ("first", "unchanged", "floor")
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child_record(argv[1], argv[2], Window.from_key(argv[3]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--fills", type=int, default=1_000_000, help="fills in the window (b, c)")
    parser.add_argument("--hour-directories", type=int, default=10_000, help="for the sensor tick")
    parser.add_argument("--backfill-days", type=int, default=30)
    parser.add_argument("--backfill-fills-per-hour", type=int, default=500)
    parser.add_argument("--database-url", help="a server where the bench may create a database")
    parser.add_argument(
        "--stored-rows", type=int, default=0, help="g: stored rows before the second recording"
    )
    parser.add_argument(
        "--only-g",
        action="store_true",
        help="with --stored-rows: figure g alone (its own database and ratio; a-h skipped)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.only_g and not args.stored_rows:
        parser.error("--only-g needs --stored-rows N")
    result: dict = {}
    if not args.only_g:
        result = run(args)
        print(table(result))
    if args.stored_rows:  # figure g, in its own database
        result["g_stored_rows"] = stored_growth(args.database_url, args.fills, args.stored_rows)
        print(g_table(result["g_stored_rows"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
