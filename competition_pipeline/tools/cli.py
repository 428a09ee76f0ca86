"""competition-pipeline: the local one-command start, the admin commands and the operator tools.

`competition-pipeline up` (what bin/start runs) brings the whole product up on a machine with
nothing installed but Python: an embedded PostgreSQL (unless COMPETITION_DATABASE_URL and
DAGSTER_POSTGRES_URL are set), a sample journal from the engine simulator that keeps appending to
the open hour, a demo competition over it, and dagster dev (webserver + daemon) on 127.0.0.1.
State lives in .var/ (COMPETITION_STATE_DIR); .var/local.json tells the other commands where the
running instance's database is.

The other commands use COMPETITION_DATABASE_URL when it is set, else the running local start's.
simulate and publish are the operator tools (engine simulator, stream publisher); soak and bench
(chaos soak, benchmark) are the test harness's, where it is installed (pip install -e ./harness).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path

from competition_pipeline.tools import log


def _command(module: str, function: str = "run") -> Callable[[argparse.Namespace], int]:
    """``competition_pipeline.tools.<module>.<function>``, imported when the command runs: the
    admin commands never load the benchmark's dependencies (Dagster among them)."""

    def run(args: argparse.Namespace) -> int:
        target = importlib.import_module(f"competition_pipeline.tools.{module}")
        return getattr(target, function)(args)

    return run


def _parser(name: str, commands, help: str, description: str | None = None):
    parser = commands.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(error=parser.error)  # a command's own usage errors name the command
    return parser


#: Entry points of this group add a command each: called with the subparsers and :func:`_parser`.
#: The test harness (distribution competition-pipeline-harness, ``harness/``) declares soak and
#: bench here, so the product's wheel carries none of it and the CLI still has them where it is.
COMMANDS_GROUP = "competition_pipeline.commands"
#: The harness's commands, listed in ``--help`` even where it is not installed, to say how.
HARNESS_COMMANDS = ("soak", "bench")
HARNESS_MISSING = (
    "error: {name} is part of the test harness, which is not installed here:"
    " pip install -e ./harness (bin/test's setup installs it)"
)


def _harness_parsers(commands) -> None:
    """The commands the installed entry points add; a harness command that none adds says how
    to install it (and accepts any arguments, so that the message is what the user sees)."""
    found = {e.name: e for e in importlib.metadata.entry_points(group=COMMANDS_GROUP)}
    for name in (*HARNESS_COMMANDS, *sorted(found.keys() - set(HARNESS_COMMANDS))):
        if name in found:
            found[name].load()(commands, _parser)
            continue
        missing = _parser(
            name, commands, "(not installed: the test harness, pip install -e ./harness)"
        )
        missing.set_defaults(func=_harness_missing(name), extra_arguments=True)


def _harness_missing(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(HARNESS_MISSING.format(name=name), file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="competition-pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(log_prefix="competition-pipeline", log_clock=False)
    commands = parser.add_subparsers(dest="command", required=True)
    up = _parser(
        "up",
        commands,
        "start the product locally (embedded PostgreSQL if needed)",
        "Start the product locally: embedded PostgreSQL (unless COMPETITION_DATABASE_URL and\n"
        "DAGSTER_POSTGRES_URL are set), a sample journal, a demo competition, dagster dev.\n"
        "Stop it with Ctrl-C.",
    )
    up.add_argument("--host", default="127.0.0.1", help="webserver bind address")
    up.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")
    up.add_argument("--hours", type=int, default=6, help="closed sample hours to write")
    up.add_argument(
        "--fills-per-hour",
        type=int,
        default=2000,
        help="fills in each closed sample hour (default 2000)",
    )
    up.add_argument("--rate", type=float, default=5.0, help="live fills per second")
    up.add_argument(
        "--no-simulate", dest="simulate", action="store_false", help="do not append live fills"
    )
    up.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="do not create the demo competition (never created when FILL_JOURNAL_DIR is set)",
    )
    up.add_argument(
        "--dagster-log-level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level of the webserver and daemon (default warning; runs print INFO)",
    )
    up.add_argument("--metrics-port", type=int, default=9464, help="Prometheus exporter (0: off)")
    up.set_defaults(func=_command("local", "cmd_up"))
    metrics = _parser("metrics", commands, "serve Prometheus metrics (scrape /metrics)")
    metrics.add_argument("--host", default="127.0.0.1", help="address to listen on")
    metrics.add_argument("--port", type=int, default=9464, help="port to listen on")
    metrics.set_defaults(func=_command("admin", "cmd_metrics"))
    schema = _parser("schema", commands, "migrate the tables to this release (idempotent)")
    schema.set_defaults(func=_command("admin", "cmd_schema"))
    psql = _parser(
        "psql",
        commands,
        "open psql on the competition database",
        "Open psql on the competition database (COMPETITION_DATABASE_URL, else the running\n"
        "local start's). Prints the command instead when psql is not installed.",
    )
    psql.add_argument("--dagster", action="store_true", help="the instance storage instead")
    psql.add_argument("--print", action="store_true", help="print the command, do not run it")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="more arguments for psql")
    psql.set_defaults(func=_command("admin", "cmd_psql"))
    competition = _parser("competition", commands, "list and create competitions, register wallets")
    actions = competition.add_subparsers(dest="action", required=True)
    _parser("list", actions, "list the competitions, their wallets and ranked wallets")
    create = _parser("create", actions, "create a competition")
    create.add_argument("id", help="competition id: letters, digits, _ . - (max 64)")
    create.add_argument("--name", help="display name (default: the id)")
    create.add_argument("--start", required=True, help="ISO instant, e.g. 2026-12-01T00:00Z")
    create.add_argument("--end", required=True, help="ISO instant (exclusive)")
    create.add_argument("--win", choices=("pnl", "volume"), default="pnl", help="ranked by")
    register = _parser("register", actions, "register wallets (stored lowercase)")
    register.add_argument("id", help="the competition's id")
    register.add_argument("wallets", nargs="+", help="wallet addresses, 0x + 40 hex digits")
    register.add_argument("--username", help="display name for the wallets")
    recount = _parser(
        "recount-totals",
        actions,
        "count windows' per-wallet totals again from their rows (after rows were changed by"
        " hand; the tables' owner)",
    )
    recount.add_argument("windows", nargs="+", help="window keys, YYYY-MM-DD-HH:00")
    competition.set_defaults(func=_command("admin", "cmd_competition"))
    standings = _parser("standings", commands, "print a competition's standings")
    standings.add_argument("id", help="the competition's id (see: competition list)")
    standings.add_argument("--json", action="store_true", help="as JSON (decimals as strings)")
    standings.add_argument("--refresh", action="store_true", help="recompute them first")
    standings.set_defaults(func=_command("admin", "cmd_standings"))
    _rebuild_parsers(commands)
    _simulate_parser(commands)
    _publish_parser(commands)
    _harness_parsers(commands)
    return parser


def _rebuild_parsers(commands) -> None:
    rebuild = _parser(
        "rebuild",
        commands,
        "re-derive recorded windows with the current rules: diff (dry run), apply, undo",
        "Re-derive each window of --from..--to (partition keys YYYY-MM-DD-HH:00, UTC, both\n"
        "included) from the journal with the current recording rules and diff it against the\n"
        "stored rows by (trade_id, wallet) and field: a dry run by default, which writes nothing.\n"
        "--apply --reason replaces each changed window in one transaction, keeping every\n"
        "superseded row (COMPETITION_OWNER_DATABASE_URL: it needs the tables' owner); --undo\n"
        "restores what a rebuild replaced. A re-run of the asset never rewrites a stored row.",
    )
    rebuild.add_argument("--from", dest="first", metavar="HOUR", help="first window")
    rebuild.add_argument("--to", dest="last", metavar="HOUR", help="last window (included)")
    rebuild.add_argument("--apply", action="store_true", help="replace the changed windows")
    rebuild.add_argument("--reason", help="why (required with --apply: it is audited)")
    rebuild.add_argument("--undo", metavar="REBUILD_ID", help="restore what a rebuild replaced")
    rebuild.add_argument("--json", action="store_true", help="the diff as JSON")
    rebuild.add_argument("--samples", type=int, default=5, help="changed rows shown per kind")
    rebuild.set_defaults(func=_command("rebuild", "cmd_rebuild"))
    status = _parser(
        "status",
        commands,
        "recording versions of the recorded windows, retired windows, recent rebuilds",
    )
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(func=_command("rebuild", "cmd_status"))


def _simulate_parser(commands) -> None:
    simulate = _parser(
        "simulate",
        commands,
        "write a simulated engine fill journal",
        "Write a simulated engine fill journal (contracts/fill-journal.md).",
    )
    simulate.add_argument("--journal", required=True, type=Path, help="journal root directory")
    simulate.add_argument(
        "--hours", type=int, default=6, help="hours to write, ending at --end-hour"
    )
    simulate.add_argument("--fills-per-hour", type=int, default=2000)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--end-hour", help="last hour, YYYY-MM-DD-HH:00 UTC (default: the current, open hour)"
    )
    simulate.add_argument("--segments", type=int, default=2, help="segments per hour")
    simulate.add_argument("--follow", action="store_true", help="then keep appending live fills")
    simulate.add_argument("--rate", type=float, default=5.0, help="live fills per second")
    simulate.add_argument("--duration", type=float, help="stop following after this many seconds")
    simulate.set_defaults(func=_command("simulate.command"), log_prefix="simulate")


def _publish_parser(commands) -> None:
    from competition_pipeline.fills.stream import STREAM, SUBJECT_PREFIX

    publish = _parser(
        "publish",
        commands,
        "publish engine messages to the fill stream (NATS)",
        "Publish engine messages to the fill stream, as the engine does (contract, section 4):\n"
        "an existing journal, or simulated fills live.",
    )
    publish.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS_URL")
    publish.add_argument("--stream", default=STREAM)
    publish.add_argument("--prefix", default=SUBJECT_PREFIX, help="subject prefix")
    sources = publish.add_subparsers(dest="source", required=True)
    journal = sources.add_parser("journal", help="publish an existing journal directory")
    journal.add_argument("root", type=Path)
    journal.add_argument("--window", action="append", help="only these windows (repeatable)")
    simulated = sources.add_parser("simulate", help="publish simulated fills live")
    simulated.add_argument("--rate", type=float, default=20.0, help="fills per second")
    simulated.add_argument("--duration", type=float, default=0.0, help="seconds (0: until Ctrl-C)")
    publish.set_defaults(func=_command("publish"), log_prefix="publish")


#: Errors a command reports as one line (``error: ...``, exit status 2), never as a traceback:
#: the database's, a bad URL, the source's, the commands' own. Looked up among the modules
#: already imported, so that a command that never touched a database does not import a driver.
_REPORTED = (
    ("psycopg", "Error"),
    ("sqlalchemy.exc", "SQLAlchemyError"),
    ("competition_pipeline.store.database", "StoreError"),
    ("competition_pipeline.store.dburl", "DatabaseUrlError"),
    ("competition_pipeline.store.standings", "CompetitionError"),
    ("competition_pipeline.fills.source", "SourceError"),
    ("competition_pipeline.recording.rebuild", "RebuildError"),
)


def _reported(exc: BaseException) -> bool:
    for module, name in _REPORTED:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def error_line(exc: BaseException) -> str:
    """One line naming the error, with every secret this process knows scrubbed out."""
    from competition_pipeline import redaction

    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {redaction.scrub(text)}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "extra_arguments", False):  # what parse_args would refuse
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    log.configure(args.log_prefix, clock=args.log_clock)
    try:
        return args.func(args)
    except Exception as exc:
        if not _reported(exc):
            raise
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":  # the child processes the tools start themselves (bench --child)
    raise SystemExit(main())
