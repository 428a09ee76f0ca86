"""``competition-pipeline bench``: the figures a to h (and g) in one run, as a table and JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from competition_harness.bench.baseline import plain_copy
from competition_harness.bench.common import (
    BENCH_WINDOW,
    Databases,
    child_record,
    dagster_home,
    record_in_child,
)
from competition_harness.bench.dagster_runs import backfill, user_path
from competition_harness.bench.growth import g_table, stored_growth
from competition_harness.bench.rebuild import r_table, rebuild_figure
from competition_harness.bench.sensor import sensor_tick
from competition_pipeline.fills.windows import Window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import embedded, simulate
from competition_pipeline.tools.log import log
from competition_pipeline.tools.progress import Progress


@contextmanager
def _server(args: argparse.Namespace, tmp: str) -> Iterator[str]:
    """The admin URL of ``--database-url``, else of an embedded PostgreSQL started in ``tmp``."""
    if args.database_url:
        yield args.database_url
        return
    log("starting an embedded PostgreSQL")
    server = embedded.start(Path(tmp) / "pg", databases=())
    try:
        yield server.url("postgres")
    finally:
        server.stop()


def _journal(args: argparse.Namespace, tmp: str) -> tuple[Path, simulate.HourStats]:
    """The benchmark's journal window (``--fills`` fills), written by the simulator in ``tmp``."""
    journal = Path(tmp) / "journal"
    log(f"writing a journal window of {args.fills:,} fills")
    written = simulate.write_hour(
        journal, BENCH_WINDOW, args.fills, progress=Progress("writing the journal", log)
    )
    return journal, written


def rebuild_only(args: argparse.Namespace) -> dict:
    """Figure r alone, on its own databases (``--only-r``)."""
    with tempfile.TemporaryDirectory() as tmp, _server(args, tmp) as admin:
        databases = Databases(admin)
        try:
            journal, _ = _journal(args, tmp)
            return rebuild_figure(databases, journal)
        finally:
            databases.drop()


def standings_only(args: argparse.Namespace) -> dict:
    """Figures s and x (``--only-s``, ``--only-x``), each on its own database."""
    from competition_harness.bench.standings import (
        index_figure,
        s_table,
        standings_figure,
        x_table,
    )

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp, _server(args, tmp) as admin:
        databases = Databases(admin)
        try:
            if args.only_x:
                journal, _ = _journal(args, tmp)
                result["x_index"] = index_figure(databases, journal, before_code=args.x_code)
                print(x_table(result["x_index"]))
            if args.only_s:
                steps = sorted(int(d) for d in args.s_days.split(","))
                result["s_standings"] = standings_figure(databases, steps, args.s_fills_per_hour)
                print(s_table(result["s_standings"]))
        finally:
            databases.drop()
    return result


def figures(args: argparse.Namespace) -> dict:
    """Figures a to h in one run, on one server."""
    with tempfile.TemporaryDirectory() as tmp, _server(args, tmp) as admin:
        databases = Databases(admin)
        home = dagster_home(Path(tmp) / "dagster_home")
        try:
            url = databases.new("main")
            CompetitionStore(url).ensure_schema()
            journal, written = _journal(args, tmp)
            log("a. plain COPY baseline")
            a = plain_copy(url, journal)
            log("b. first recording (child process)")
            b = record_in_child(url, journal, "b")
            log("c. recording the unchanged window again")
            c = record_in_child(url, journal, "c")
            log(f"e. sensor tick over {args.hour_directories:,} hour directories")
            e = sensor_tick(args.hour_directories)
            log(f"f. {args.backfill_days}-day backfill as one run")
            f = backfill(url, databases, home, args.backfill_days, args.backfill_fills_per_hour)
            log("h. dagster asset materialize of the window with its checks (subprocess)")
            h = user_path(databases, home, journal)
        finally:
            databases.drop()
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


def run(args: argparse.Namespace) -> int:
    if args.child:  # the recording of b, c or g, in the child process record_in_child starts
        url, journal, window = args.child
        child_record(url, journal, Window.from_key(window))
        return 0
    if args.only_g and not args.stored_rows:
        args.error("--only-g needs --stored-rows N")
    result: dict = {}
    if args.only_i:
        from competition_harness.bench.live import i_table, live_follow

        env = dict(item.split("=", 1) for item in args.live_env)
        result["i_live"] = live_follow(
            seconds=args.live_seconds,
            rate=args.live_rate,
            warmup=args.live_warmup,
            code=args.live_code,
            env=env,
        )
        print(i_table(result["i_live"]))
    elif args.only_w:
        from competition_harness.bench.workers import w_table, workers_figure

        result["w_workers"] = workers_figure(args.windows, args.w_fills_per_hour)
        print(w_table(result["w_workers"]))
    elif args.only_r:
        result["r_rebuild"] = rebuild_only(args)
        print(r_table(result["r_rebuild"]))
    elif args.only_l:
        from competition_harness.bench.hostile import l_table, long_line_figure

        result["l_long_line"] = long_line_figure()
        print(l_table(result["l_long_line"]))
    elif args.only_s or args.only_x:
        result.update(standings_only(args))
    elif not args.only_g:
        result = figures(args)
        print(table(result))
    if args.stored_rows:  # figure g, in its own database
        result["g_stored_rows"] = stored_growth(args.database_url, args.fills, args.stored_rows)
        print(g_table(result["g_stored_rows"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0
