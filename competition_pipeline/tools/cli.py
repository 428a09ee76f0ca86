"""competition-pipeline: the local one-command start and small admin commands.

`competition-pipeline up` (what bin/start runs) brings the whole product up on a machine with
nothing installed but Python: an embedded PostgreSQL (unless COMPETITION_DATABASE_URL and
DAGSTER_POSTGRES_URL are set), a sample journal from the engine simulator that keeps appending to
the open hour, a demo competition over it, and dagster dev (webserver + daemon) on 127.0.0.1.
State lives in .var/ (COMPETITION_STATE_DIR); .var/local.json tells the other commands where the
running instance's database is.

The other commands use COMPETITION_DATABASE_URL when it is set, else the running local start's.
"""

from __future__ import annotations

import argparse
import contextlib
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

from competition_pipeline.store import dburl
from competition_pipeline.tools.progress import stderr_log

REPO = Path(__file__).resolve().parents[2]
STATE_FILE = "local.json"
DEMO_COMPETITION = "demo"
DEMO_WALLETS = 12  # the simulator's busiest wallets: they trade in every sample hour


_log = stderr_log("competition-pipeline")


def _state_dir() -> Path:
    return Path(os.environ.get("COMPETITION_STATE_DIR") or REPO / ".var").resolve()


# --- where the other commands find the database ---------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_local_state(state: Path | None = None) -> dict | None:
    """The running local start's state file, or None when none is running."""
    path = (state or _state_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if _pid_alive(int(data.get("pid", 0))) else None


def _write_local_state(state: Path, **entries: object) -> Path:
    """Written by ``up`` once the databases answer; URLs only when they carry no password (a
    configured URL with one stays in the environment, the file names the variable instead)."""
    path = state / STATE_FILE
    data: dict[str, object] = {"pid": os.getpid()}
    for name, variable in (
        ("competition_database_url", "COMPETITION_DATABASE_URL"),
        ("dagster_postgres_url", "DAGSTER_POSTGRES_URL"),
    ):
        url = os.environ[variable]
        data[name] = None if dburl.password(url) else url
        data[f"{name}_redacted"] = dburl.redacted(url)
    data.update(entries)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def database_url(dagster: bool = False) -> str:
    """COMPETITION_DATABASE_URL (DAGSTER_POSTGRES_URL with ``dagster``) when set, else the running
    local start's; otherwise SystemExit naming both ways."""
    variable = "DAGSTER_POSTGRES_URL" if dagster else "COMPETITION_DATABASE_URL"
    key = "dagster_postgres_url" if dagster else "competition_database_url"
    if os.environ.get(variable):
        return os.environ[variable]
    local = read_local_state()
    if local and local.get(key):
        return local[key]
    if local:
        raise SystemExit(
            f"error: the running local start uses {local.get(key + '_redacted')}, which has a"
            f" password: set {variable} to it in this shell"
        )
    raise SystemExit(
        f"error: no database: set {variable} (postgresql://user@host/db), or start the local"
        f" instance with bin/start (it writes {_state_dir() / STATE_FILE})"
    )


# --- up -------------------------------------------------------------------------------------------


def _prepare_databases(state: Path, stack: contextlib.ExitStack):
    """Use the configured databases, or start the embedded PostgreSQL for the missing ones."""
    if os.environ.get("COMPETITION_DATABASE_URL") and os.environ.get("DAGSTER_POSTGRES_URL"):
        return None
    from competition_pipeline.tools import embedded

    _log(f"starting embedded PostgreSQL in {state / 'pg'}")
    server = embedded.start(state / "pg")

    def stop_server() -> None:
        _log("stopping embedded PostgreSQL")
        server.stop()

    stack.callback(stop_server)
    os.environ.setdefault("COMPETITION_DATABASE_URL", server.url("competition"))
    os.environ.setdefault("DAGSTER_POSTGRES_URL", server.url("dagster"))
    return server


def journal_hours(root: Path) -> list:
    """The hours the journal holds (``date=*/hour=*`` directories), oldest first."""
    from competition_pipeline.fills.windows import Window

    hours = []
    for directory in root.glob("date=*/hour=*"):
        try:
            day, hour = directory.parent.name[5:], int(directory.name[5:])
            hours.append(Window.from_key(f"{day}-{hour:02d}:00"))
        except ValueError:
            continue
    return sorted(hours, key=lambda w: w.start)


def _prepare_journal(state: Path, hours: int, fills_per_hour: int) -> Path:
    """The journal at FILL_JOURNAL_DIR, or a sample one written by the simulator. Partitions begin
    at the journal's first hour unless FILL_PARTITIONS_START is set (a deployment keeps its own)."""
    from competition_pipeline.fills.journal import window_dir
    from competition_pipeline.fills.windows import HOUR, Window
    from competition_pipeline.tools import simulate

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
    present = journal_hours(root)
    first = present[0] if present else current
    if not os.environ.get("FILL_PARTITIONS_START"):
        os.environ["FILL_PARTITIONS_START"] = first.key
    _log(f"partitions start at {os.environ['FILL_PARTITIONS_START']}")
    return root


def _prepare_demo_competition(journal: Path) -> None:
    """A running competition over the sample with the simulator's busiest wallets registered, so
    competition_standings means something on first start. Kept if it exists (a restart)."""
    from competition_pipeline.fills.windows import Window
    from competition_pipeline.store.database import CompetitionStore
    from competition_pipeline.store.standings import CompetitionError, Competitions
    from competition_pipeline.tools import simulate

    store = CompetitionStore(os.environ["COMPETITION_DATABASE_URL"])
    store.ensure_schema()
    competitions = Competitions(store)
    if DEMO_COMPETITION in competitions.all_ids():
        return
    hours = journal_hours(journal)
    start = (hours[0] if hours else Window.containing(dt.datetime.now(dt.UTC))).start
    end = start + dt.timedelta(days=7)
    try:
        competitions.create(DEMO_COMPETITION, "Demo competition", start, end, "pnl")
    except CompetitionError as exc:  # created by a concurrent start
        _log(f"demo competition: {exc}")
        return
    wallets = simulate.FillSimulator().wallets[:DEMO_WALLETS]
    for number, wallet in enumerate(wallets, start=1):
        competitions.register(DEMO_COMPETITION, wallet, f"trader{number:02d}")
    _log(
        f"demo competition {DEMO_COMPETITION!r}: {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"
        f" UTC, {len(wallets)} wallets registered"
    )


def _publish_to_stream(journal: Path, rate: float) -> None:
    """FILL_SOURCE=nats: the engine's side of the demo, on the stream (a daemon thread)."""
    import asyncio
    import itertools

    from competition_pipeline.tools.publish import journal_lines, live_lines, publish_lines

    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    lines = itertools.chain(journal_lines(journal), live_lines(rate, 0))
    try:
        asyncio.run(publish_lines(url, lines))
    except Exception as exc:  # noqa: BLE001 (the demo goes on; the runs will show the stream down)
        _log(f"publishing to {url} stopped: {type(exc).__name__}: {exc}")


def _start_appender(args: argparse.Namespace, journal: Path, stack: contextlib.ExitStack) -> None:
    """The engine's side of the demo: live fills into the open hour (or onto the stream)."""
    if not args.simulate:
        return
    stop = threading.Event()
    if os.environ.get("FILL_SOURCE") == "nats":
        appender = threading.Thread(
            target=_publish_to_stream,
            args=(journal, args.rate),
            name="stream-publisher",
            daemon=True,
        )
        _log(f"publishing the sample journal, then {args.rate} fills/s, to NATS")
    else:
        from competition_pipeline.tools import simulate

        appender = threading.Thread(
            target=simulate.append_live,
            kwargs={"root": journal, "rate_per_second": args.rate, "stop": stop},
            name="fill-simulator",
            daemon=True,
        )
        _log(f"simulator appending {args.rate} fills/s to the open hour")
    appender.start()

    def stop_appender() -> None:
        stop.set()
        appender.join(timeout=5)

    stack.callback(stop_appender)


# The local instance: the project's dagster.yaml plus quieter Python logs (full logs in the UI).
_LOCAL_LOGGING = """
# Added by `competition-pipeline up`: run workers print INFO and above (the full log is in the UI).
python_logs:
  python_log_level: INFO
"""


def _prepare_home(state: Path) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or state / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text() + _LOCAL_LOGGING)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _run_dagster_dev(args: argparse.Namespace, home: Path) -> int:
    """``dagster dev`` until it exits; SIGINT/SIGTERM stop it gracefully (SIGKILL after 30 s)."""
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "dev",
        "-h",
        args.host,
        "-p",
        str(args.port),
        "-w",
        str(REPO / "workspace.yaml"),
        # The webserver's and daemon's own lines (a sensor tick every few seconds) only when they
        # matter; each recorded window still prints its one INFO line from the run.
        "--log-level",
        args.dagster_log_level,
    ]
    # Own process group, SIGINT at its default: a shell that started us in the background
    # leaves SIGINT ignored, and dagster dev shuts down gracefully only on SIGINT.
    # `dagster dev` is superseded by `dg dev` (another package); the warning says nothing to a user.
    warning_filters = [
        os.environ.get("PYTHONWARNINGS"),
        "ignore:Function `dev_command` is superseded",
    ]
    env = {**os.environ, "PYTHONWARNINGS": ",".join(w for w in warning_filters if w)}
    process = subprocess.Popen(
        command,
        cwd=home,
        env=env,
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
    try:
        while True:
            try:
                return process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                if stop_requested and time.monotonic() - stop_requested[0] > 30:
                    os.killpg(process.pid, signal.SIGKILL)
    finally:
        _end_group(process.pid)


def _end_group(pgid: int, grace: float = 10.0) -> None:
    """End what dagster dev left in its process group (its code server can outlive it by its
    45 s heartbeat timeout) before the embedded PostgreSQL it uses is stopped."""
    deadline = time.monotonic() + grace
    sent = signal.SIGTERM
    while True:
        try:
            os.killpg(pgid, sent)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            sent = signal.SIGKILL
        time.sleep(0.2)


def cmd_up(args: argparse.Namespace) -> int:
    """Each step registers its own cleanup on the stack; they run in reverse order on exit."""
    state = _state_dir()
    state.mkdir(parents=True, exist_ok=True)
    # The local product follows the journal by itself: the sensor starts in the running state.
    os.environ.setdefault("FILL_SENSOR_DEFAULT_STATUS", "running")
    # The demo competition belongs to the sample journal: never added to a journal (and database)
    # the user brought.
    demo = args.demo and not os.environ.get("FILL_JOURNAL_DIR")
    with contextlib.ExitStack() as stack:
        _prepare_databases(state, stack)
        journal = _prepare_journal(state, args.hours, args.fills_per_hour)
        if demo:
            _prepare_demo_competition(journal)
        _start_appender(args, journal, stack)
        home = _prepare_home(state)
        _schema_upgrade(os.environ["COMPETITION_DATABASE_URL"])  # migrations before any run
        state_file = _write_local_state(
            state,
            ui=f"http://{args.host}:{args.port}",
            journal=str(journal),
            dagster_home=str(home),
        )
        stack.callback(state_file.unlink, missing_ok=True)
        _log(f"competition database: {dburl.redacted(os.environ['COMPETITION_DATABASE_URL'])}")
        _log(f"instance storage:     {dburl.redacted(os.environ['DAGSTER_POSTGRES_URL'])}")
        _log(f"journal: {journal}   DAGSTER_HOME: {home}")
        _log(f"UI: http://{args.host}:{args.port}")
        _start_metrics(args)
        _log("in another shell: competition-pipeline standings demo | competition list | psql")
        return _run_dagster_dev(args, home)


def _start_metrics(args: argparse.Namespace) -> None:
    """The Prometheus exporter beside the UI (a daemon thread; it ends with the command)."""
    if not args.metrics_port:
        return
    from competition_pipeline.tools import metrics

    try:  # the product runs without its exporter rather than not at all
        metrics.serve(args.host, args.metrics_port)
        _log(f"metrics: http://{args.host}:{args.metrics_port}/metrics")
    except OSError as exc:
        _log(f"metrics exporter not started on port {args.metrics_port}: {exc}")


# --- admin commands -------------------------------------------------------------------------------


def _store():
    from competition_pipeline.store.database import CompetitionStore

    store = CompetitionStore(database_url())
    store.ensure_schema()
    return store


def cmd_schema(_args: argparse.Namespace) -> int:
    _schema_upgrade(database_url())
    return 0


def _schema_upgrade(url: str) -> None:
    """Alembic ``upgrade head`` (competition_pipeline.store.schema), saying what it applied."""
    from competition_pipeline.store import schema
    from competition_pipeline.store.database import CompetitionStore

    store = CompetitionStore(url)
    applied = store.ensure_schema()
    for revision in applied:
        _log(f"applied migration {revision}")
    _log(f"schema at revision {schema.head()} in {store.display_url}")


def _psql_binary() -> str | None:
    found = shutil.which("psql")
    if found:
        return found
    try:
        from competition_pipeline.tools import embedded

        candidate = embedded.psql_path()
    except ImportError:
        return None
    return str(candidate) if candidate.exists() else None


def cmd_psql(args: argparse.Namespace) -> int:
    """psql on the database; the password (if any) travels in PGPASSWORD, never on argv."""
    url = database_url(dagster=args.dagster)
    secret = dburl.password(url)
    plain = dburl.libpq(url)
    if secret:
        plain = dburl.parse(url)._replace(password=None, drivername="postgresql")
        plain = plain.render_as_string(hide_password=False)
    binary = _psql_binary()
    if binary is None or args.print:
        prefix = "PGPASSWORD=... " if secret else ""
        print(f"{prefix}psql '{plain}'")
        if binary is None:
            _log("psql is not installed (apt-get install postgresql-client): the command above")
        return 0
    env = dict(os.environ)
    if secret:
        env["PGPASSWORD"] = secret
    extra = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
    os.execve(binary, [binary, *extra, plain], env)
    return 0  # not reached


def _instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def cmd_competition(args: argparse.Namespace) -> int:
    from competition_pipeline.store.standings import CompetitionError, Competitions

    competitions = Competitions(_store())
    try:
        if args.action == "create":
            c = competitions.create(
                args.id, args.name or args.id, _instant(args.start), _instant(args.end), args.win
            )
            print(f"created {c.id}: {c.start_ts.isoformat()} .. {c.end_ts.isoformat()}")
        elif args.action == "register":
            for wallet in args.wallets:
                print(f"registered {competitions.register(args.id, wallet, args.username)}")
        elif args.action == "list":
            summaries = competitions.summaries()
            if not summaries:
                print("no competitions (create one: competition-pipeline competition create)")
            else:
                print(f"{'id':<20} {'start (UTC)':<16} {'end (UTC)':<16} win    wallets ranked")
            for c in summaries:
                print(
                    f"{c.id:<20} {c.start_ts.astimezone(dt.UTC):%Y-%m-%d %H:%M} "
                    f"{c.end_ts.astimezone(dt.UTC):%Y-%m-%d %H:%M} {c.win:<6} "
                    f"{c.participants:>7} {c.ranked:>6}"
                )
    except CompetitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_standings(args: argparse.Namespace) -> int:
    from competition_pipeline.store.standings import CompetitionError, Competitions

    competitions = Competitions(_store())
    try:
        rows = competitions.refresh(args.id) if args.refresh else competitions.standings(args.id)
        participants = competitions.participant_count(args.id) if not rows else len(rows)
    except CompetitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        if participants == 0:
            message = (
                f"competition {args.id!r} has no registered wallets yet: "
                f"competition-pipeline competition register {args.id} 0x..."
            )
        else:
            message = (
                f"standings of {args.id!r} are not computed yet ({participants} wallets"
                " registered): materialize competition_standings in the UI (the standings sensor"
                " does it after each recorded window), or run this command with --refresh"
            )
        print(message, file=sys.stderr)
        if args.json:
            print("[]")
        return 1
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


def cmd_metrics(args: argparse.Namespace) -> int:
    from competition_pipeline.tools import metrics

    server, thread = metrics.serve(args.host, args.port)
    _log(f"metrics on http://{args.host}:{args.port}/metrics")
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def _parser(name: str, commands, help: str, description: str | None = None):
    return commands.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="competition-pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    up.set_defaults(func=cmd_up)
    metrics = _parser("metrics", commands, "serve Prometheus metrics (scrape /metrics)")
    metrics.add_argument("--host", default="127.0.0.1", help="address to listen on")
    metrics.add_argument("--port", type=int, default=9464, help="port to listen on")
    metrics.set_defaults(func=cmd_metrics)
    schema = _parser("schema", commands, "migrate the tables to this release (idempotent)")
    schema.set_defaults(func=cmd_schema)
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
    psql.set_defaults(func=cmd_psql)
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
    competition.set_defaults(func=cmd_competition)
    standings = _parser("standings", commands, "print a competition's standings")
    standings.add_argument("id", help="the competition's id (see: competition list)")
    standings.add_argument("--json", action="store_true", help="as JSON (decimals as strings)")
    standings.add_argument("--refresh", action="store_true", help="recompute them first")
    standings.set_defaults(func=cmd_standings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
