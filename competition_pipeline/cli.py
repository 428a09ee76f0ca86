"""``competition-pipeline``: the local one-command start and small admin commands.

``competition-pipeline up`` brings the whole product up on a machine with nothing installed but
Python: an embedded PostgreSQL (unless ``COMPETITION_DATABASE_URL`` and ``DAGSTER_POSTGRES_URL``
are set), a sample journal from the engine simulator that keeps appending to the open hour, and
``dagster dev`` (webserver + daemon) on 127.0.0.1. State lives in ``.var/``
(``COMPETITION_STATE_DIR``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from competition_pipeline import dburl

REPO = Path(__file__).resolve().parents[1]


def _log(message: str) -> None:
    print(f"[competition-pipeline] {message}", file=sys.stderr, flush=True)


def _state_dir() -> Path:
    return Path(os.environ.get("COMPETITION_STATE_DIR") or REPO / ".var").resolve()


def _prepare_databases(state: Path):
    """Use the configured databases, or start the embedded PostgreSQL for the missing ones."""
    if os.environ.get("COMPETITION_DATABASE_URL") and os.environ.get("DAGSTER_POSTGRES_URL"):
        return None
    from competition_pipeline import embedded

    _log(f"starting embedded PostgreSQL in {state / 'pg'}")
    server = embedded.start(state / "pg")
    os.environ.setdefault("COMPETITION_DATABASE_URL", server.url("competition"))
    os.environ.setdefault("DAGSTER_POSTGRES_URL", server.url("dagster"))
    return server


def _prepare_journal(state: Path, hours: int, fills_per_hour: int) -> Path:
    """The journal at FILL_JOURNAL_DIR, or a sample one written by the simulator."""
    from competition_pipeline import simulate
    from competition_pipeline.sources.journal import window_dir
    from competition_pipeline.windows import HOUR, Window

    root = Path(os.environ.get("FILL_JOURNAL_DIR") or state / "journal").resolve()
    os.environ["FILL_JOURNAL_DIR"] = str(root)
    root.mkdir(parents=True, exist_ok=True)
    current = Window.containing(dt.datetime.now(dt.UTC))
    # Closed sample hours before the open one; the open hour is written live by append_live.
    for back in range(hours, 0, -1):
        window = Window(current.start - back * HOUR)
        if not window_dir(root, window).exists():
            stats = simulate.write_hour(root, window, fills_per_hour)
            _log(f"sample journal: wrote {window.key} ({stats.fills} fills)")
    return root


def _publish_to_stream(journal: Path, rate: float) -> None:
    """FILL_SOURCE=nats: the engine's side of the demo, on the stream (a daemon thread)."""
    import asyncio
    import itertools

    from competition_pipeline.publish import _live_lines, journal_lines, publish_lines

    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    lines = itertools.chain(journal_lines(journal), _live_lines(rate, 0))
    try:
        asyncio.run(publish_lines(url, lines))
    except Exception as exc:  # noqa: BLE001 (the demo goes on; the runs will show the stream down)
        _log(f"publishing to {url} stopped: {type(exc).__name__}: {exc}")


def _prepare_home(state: Path) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or state / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_up(args: argparse.Namespace) -> int:
    state = _state_dir()
    state.mkdir(parents=True, exist_ok=True)
    # The local product follows the journal by itself: the sensor starts in the running state.
    os.environ.setdefault("FILL_SENSOR_DEFAULT_STATUS", "running")
    server = _prepare_databases(state)
    stop = threading.Event()
    appender: threading.Thread | None = None
    try:
        journal = _prepare_journal(state, args.hours, args.fills_per_hour)
        if args.simulate and os.environ.get("FILL_SOURCE") == "nats":
            appender = threading.Thread(
                target=_publish_to_stream,
                args=(journal, args.rate),
                name="stream-publisher",
                daemon=True,
            )
            appender.start()
            _log(f"publishing the sample journal, then {args.rate} fills/s, to NATS")
        elif args.simulate:
            from competition_pipeline import simulate

            appender = threading.Thread(
                target=simulate.append_live,
                kwargs={"root": journal, "rate_per_second": args.rate, "stop": stop},
                name="fill-simulator",
                daemon=True,
            )
            appender.start()
            _log(f"simulator appending {args.rate} fills/s to the open hour")
        home = _prepare_home(state)
        _schema_upgrade(os.environ["COMPETITION_DATABASE_URL"])  # migrations before any run
        _log(f"competition database: {dburl.redacted(os.environ['COMPETITION_DATABASE_URL'])}")
        _log(f"instance storage:     {dburl.redacted(os.environ['DAGSTER_POSTGRES_URL'])}")
        _log(f"journal: {journal}   DAGSTER_HOME: {home}")
        _log(f"UI: http://{args.host}:{args.port}")
        command = [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-h",
            args.host,
            "-p",
            str(args.port),
            "-w",
            str(REPO / "workspace.yaml"),
        ]
        # Own process group, SIGINT at its default: a shell that started us in the background
        # leaves SIGINT ignored, and dagster dev shuts down gracefully only on SIGINT.
        process = subprocess.Popen(
            command,
            cwd=home,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
        )

        stop_requested: list[float] = []

        def request_stop(_signum: int, _frame: object) -> None:
            # Only signal here: waiting belongs to the loop below (Popen.wait is not reentrant).
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            stop_requested.append(time.monotonic())

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        while True:
            try:
                return process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                if stop_requested and time.monotonic() - stop_requested[0] > 30:
                    os.killpg(process.pid, signal.SIGKILL)
    finally:
        stop.set()
        if appender is not None:
            appender.join(timeout=5)
        if server is not None:
            _log("stopping embedded PostgreSQL")
            server.stop()


def cmd_schema(_args: argparse.Namespace) -> int:
    url = os.environ.get("COMPETITION_DATABASE_URL")
    if not url:
        _log("COMPETITION_DATABASE_URL is not set")
        return 2
    _schema_upgrade(url)
    return 0


def _schema_upgrade(url: str) -> None:
    """Alembic ``upgrade head`` (competition_pipeline.schema), saying what it applied."""
    from competition_pipeline import schema
    from competition_pipeline.store import CompetitionStore

    store = CompetitionStore(url)
    applied = store.ensure_schema()
    for revision in applied:
        _log(f"applied migration {revision}")
    _log(f"schema at revision {schema.head()} in {store.display_url}")


def _competitions():
    from competition_pipeline.standings import Competitions
    from competition_pipeline.store import CompetitionStore

    url = os.environ.get("COMPETITION_DATABASE_URL")
    if not url:
        raise SystemExit("COMPETITION_DATABASE_URL is not set")
    store = CompetitionStore(url)
    store.ensure_schema()
    return Competitions(store)


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def cmd_competition(args: argparse.Namespace) -> int:
    from competition_pipeline.standings import CompetitionError

    competitions = _competitions()
    try:
        if args.action == "create":
            c = competitions.create(
                args.id, args.name or args.id, _instant(args.start), _instant(args.end), args.win
            )
            print(f"created {c.id}: {c.start_ts.isoformat()} .. {c.end_ts.isoformat()}")
        elif args.action == "register":
            for wallet in args.wallets:
                print(f"registered {competitions.register(args.id, wallet, args.username)}")
    except CompetitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_standings(args: argparse.Namespace) -> int:
    from competition_pipeline.standings import CompetitionError

    competitions = _competitions()
    try:
        rows = competitions.refresh(args.id) if args.refresh else competitions.standings(args.id)
    except CompetitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "rank": s.rank,
                        "wallet": s.wallet,
                        "username": s.username,
                        "pnl": str(s.pnl),
                        "volume": str(s.volume),
                        "trades": s.trades,
                        "fees": str(s.fees),
                        "medal": s.medal,
                    }
                    for s in rows
                ],
                indent=2,
            )
        )
        return 0
    print(
        f"{'rank':>4}  {'wallet':<42}  {'user':<12} {'pnl':>16} {'volume':>18} {'trades':>7} medal"
    )
    for s in rows:
        print(
            f"{s.rank:>4}  {s.wallet:<42}  {(s.username or ''):<12} {s.pnl:>16} {s.volume:>18} "
            f"{s.trades:>7} {s.medal or ''}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="competition-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the product locally (embedded PostgreSQL if needed)")
    up.add_argument("--host", default="127.0.0.1", help="webserver bind address")
    up.add_argument("--port", type=int, default=3000)
    up.add_argument("--hours", type=int, default=6, help="closed sample hours to write")
    up.add_argument("--fills-per-hour", type=int, default=2000)
    up.add_argument("--rate", type=float, default=5.0, help="live fills per second")
    up.add_argument(
        "--no-simulate", dest="simulate", action="store_false", help="do not append live fills"
    )
    up.set_defaults(func=cmd_up)
    schema = commands.add_parser("schema", help="migrate the tables to this release (idempotent)")
    schema.set_defaults(func=cmd_schema)
    competition = commands.add_parser("competition", help="create competitions, register wallets")
    actions = competition.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a competition")
    create.add_argument("id")
    create.add_argument("--name")
    create.add_argument("--start", required=True, help="ISO instant, e.g. 2026-12-01T00:00Z")
    create.add_argument("--end", required=True, help="ISO instant (exclusive)")
    create.add_argument("--win", choices=("pnl", "volume"), default="pnl")
    register = actions.add_parser("register", help="register wallets (stored lowercase)")
    register.add_argument("id")
    register.add_argument("wallets", nargs="+")
    register.add_argument("--username")
    competition.set_defaults(func=cmd_competition)
    standings = commands.add_parser("standings", help="print a competition's standings")
    standings.add_argument("id")
    standings.add_argument("--json", action="store_true", help="as JSON")
    standings.add_argument("--refresh", action="store_true", help="recompute them first")
    standings.set_defaults(func=cmd_standings)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
