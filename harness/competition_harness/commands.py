"""The harness's commands in ``competition-pipeline`` (entry points of the group
``competition_pipeline.commands``, harness/pyproject.toml): their names and options, unchanged
since they lived in the product's CLI. Each function is called by competition_pipeline/tools/cli.py
with the subparsers and the CLI's own function that adds one."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

#: competition_pipeline.tools.cli._parser: (name, subparsers, help, description) -> the parser.
NewParser = Callable[..., argparse.ArgumentParser]


def _run(module: str) -> Callable[[argparse.Namespace], int]:
    """``module.run``, imported when the command runs: the CLI's other commands never load the
    harness's dependencies (Dagster among them)."""

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)

    return run


def add_soak(commands, new_parser: NewParser) -> None:
    """``competition-pipeline soak``: the chaos soak (:mod:`competition_harness.soak`)."""
    from competition_harness.soak import (
        FAILOVER_FAULTS,
        FAULTS,
        HOST_FAULTS,
        NATS_FAULTS,
        NATS_HOST_FAULTS,
        REDELIVER_FAULTS,
        SOURCES,
        STOP_FAULTS,
        TOPOLOGIES,
    )

    soak = new_parser(
        "soak",
        commands,
        "chaos soak: real processes, random faults, then convergence with no step",
        "Chaos soak: real processes, random faults, then convergence with no step.",
    )
    soak.add_argument("--duration", type=float, default=300, help="seconds of faults")
    soak.add_argument("--seed", type=int, default=1, help="random seed of the fault plan")
    soak.add_argument(
        "--faults",
        help=f"comma-separated subset of {','.join((*FAULTS, *STOP_FAULTS))} (default: all), and"
        " with --topology"
        f" celery of {','.join(HOST_FAULTS)}, with --source nats of {','.join(NATS_FAULTS)},"
        f" with both of {','.join(NATS_HOST_FAULTS)} (late-segment and corrupt are the"
        f" journal's); {','.join(REDELIVER_FAULTS)} (celery) and {','.join(FAILOVER_FAULTS)}"
        " (a primary and a streaming standby, lossy or clean) only when named",
    )
    soak.add_argument(
        "--source",
        choices=SOURCES,
        default="journal",
        help="journal: the engine writes the journal; nats: it publishes to a NATS JetStream"
        " server of the soak's own (FILL_SOURCE=nats)",
    )
    soak.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="local",
        help="local: runs on this host (dagster.yaml); celery: on worker hosts in network"
        " namespaces through CeleryRunLauncher and a RabbitMQ broker of the soak's own (root)",
    )
    soak.add_argument("--hosts", type=int, default=2, help="worker hosts (--topology celery)")
    soak.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for convergence afterwards"
    )
    soak.add_argument("--max-faults", type=int, help="stop injecting after this many faults")
    soak.add_argument("--fills-per-hour", type=int, default=2000, help="sample closed hours")
    soak.add_argument("--hours", type=int, default=3, help="closed sample hours")
    soak.add_argument("--workdir", help="keep everything here (default: a temporary directory)")
    soak.add_argument("--json", help="also write the result to this file")
    soak.set_defaults(func=_run("competition_harness.soak"), log_prefix="soak", log_clock=True)


def add_bench(commands, new_parser: NewParser) -> None:
    """``competition-pipeline bench``: the benchmark (:mod:`competition_harness.bench`)."""
    bench = new_parser(
        "bench",
        commands,
        "benchmark: the pipeline against a plain COPY of the same rows",
        "Benchmark: the pipeline against a plain COPY of the same rows, measured in one run\n"
        "(figures a to h; g with --stored-rows). Without --database-url it runs on a throwaway\n"
        "embedded PostgreSQL; with one, it creates and drops a database of its own there.",
    )
    bench.add_argument("--fills", type=int, default=1_000_000, help="fills in the window (b, c)")
    bench.add_argument("--hour-directories", type=int, default=10_000, help="for the sensor tick")
    bench.add_argument("--backfill-days", type=int, default=30)
    bench.add_argument("--backfill-fills-per-hour", type=int, default=500)
    bench.add_argument("--database-url", help="a server where the bench may create a database")
    bench.add_argument(
        "--stored-rows", type=int, default=0, help="g: stored rows before the second recording"
    )
    bench.add_argument(
        "--only-g",
        action="store_true",
        help="with --stored-rows: figure g alone (its own database and ratio; a-h skipped)",
    )
    bench.add_argument(
        "--only-l",
        action="store_true",
        help="only figure l: one hostile line of 100/200/400 MB (time and peak RSS)",
    )
    bench.add_argument(
        "--only-r",
        action="store_true",
        help="figure r alone: a rebuild of the window (dry run, apply, undo) against its first"
        " recording",
    )
    bench.add_argument(
        "--only-i",
        action="store_true",
        help="figure i alone: the local start following the open hour (lag, runs, CPU)",
    )
    bench.add_argument("--live-seconds", type=float, default=600, help="i: measured seconds")
    bench.add_argument("--live-rate", type=float, default=20, help="i: fills appended a second")
    bench.add_argument("--live-warmup", type=float, default=90, help="i: seconds before measuring")
    bench.add_argument(
        "--live-code", type=Path, help="i: run this checkout's code (the figure before a change)"
    )
    bench.add_argument(
        "--live-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="i: an environment variable for the local start (e.g. an alternative's setting)",
    )
    bench.add_argument(
        "--only-w",
        action="store_true",
        help="figure w alone: --windows runs on the service host, then on 1 and 2 Celery worker"
        " hosts (network namespaces; root)",
    )
    bench.add_argument("--windows", type=int, default=24, help="w: windows (one run each)")
    bench.add_argument("--w-fills-per-hour", type=int, default=2000, help="w: fills per window")
    bench.add_argument(
        "--only-s",
        action="store_true",
        help="figure s: the standings refresh of 1-, 3-, 10- and 30-day competitions over"
        " journals of --s-days days, before (rows only) and after (per-window totals)",
    )
    bench.add_argument(
        "--s-days", default="10,30", help="s: the journal's sizes in days, grown in turn"
    )
    bench.add_argument("--s-fills-per-hour", type=int, default=8000, help="s: fills an hour")
    bench.add_argument(
        "--only-x",
        action="store_true",
        help="figure x: the first recording (b) and the plain COPY (a) of --fills fills with and"
        " without the dropped (wallet, fill_ts) index, alternated",
    )
    bench.add_argument(
        "--x-code",
        type=Path,
        help="x: also record with this checkout's code and schema (the release before: its"
        " index, no totals), alternated with the others",
    )
    bench.add_argument("--json", type=Path, help="also write the figures as JSON here")
    # Internal: the recording of figures b, c and g in a child process (its own peak RSS).
    bench.add_argument(
        "--child", nargs=3, metavar=("URL", "JOURNAL", "WINDOW"), help=argparse.SUPPRESS
    )
    bench.set_defaults(func=_run("competition_harness.bench.command"), log_prefix="bench")
