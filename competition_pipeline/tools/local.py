"""``competition-pipeline up`` (what bin/start runs): the whole product on one machine.

It brings the product up on a machine with nothing installed but Python: an embedded PostgreSQL
(unless COMPETITION_DATABASE_URL and DAGSTER_POSTGRES_URL are set), a sample journal from the engine
simulator that keeps appending to the open hour, a demo competition over it, and dagster dev
(webserver + daemon) on 127.0.0.1. State lives in .var/ (COMPETITION_STATE_DIR); .var/local.json
tells the other commands where the running instance's database is (``local_state``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from competition_pipeline import redaction
from competition_pipeline.tools import admin, local_state
from competition_pipeline.tools.local_state import REPO
from competition_pipeline.tools.log import log
from competition_pipeline.tools.processes import sigint_at_default

DEMO_COMPETITION = "demo"
DEMO_WALLETS = 12  # the simulator's busiest wallets: they trade in every sample hour


def _prepare_databases(state: Path, stack: contextlib.ExitStack):
    """Use the configured databases, or start the embedded PostgreSQL for the missing ones."""
    if os.environ.get("COMPETITION_DATABASE_URL") and os.environ.get("DAGSTER_POSTGRES_URL"):
        return None
    from competition_pipeline.tools import embedded

    log(f"starting embedded PostgreSQL in {state / 'pg'}")
    server = embedded.start(state / "pg")

    def stop_server() -> None:
        log("stopping embedded PostgreSQL")
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
            log(f"sample journal: wrote {window.key} ({stats.fills} fills)")
    present = journal_hours(root)
    first = present[0] if present else current
    if not os.environ.get("FILL_PARTITIONS_START"):
        os.environ["FILL_PARTITIONS_START"] = first.key
    log(f"partitions start at {os.environ['FILL_PARTITIONS_START']}")
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
        log(f"demo competition: {exc}")
        return
    wallets = simulate.FillSimulator().wallets[:DEMO_WALLETS]
    for number, wallet in enumerate(wallets, start=1):
        competitions.register(DEMO_COMPETITION, wallet, f"trader{number:02d}")
    log(
        f"demo competition {DEMO_COMPETITION!r}: {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"
        f" UTC, {len(wallets)} wallets registered"
    )


def _publish_to_stream(journal: Path, rate: float) -> None:
    """FILL_SOURCE=nats: the engine's side of the demo, on the stream (a daemon thread)."""
    import asyncio
    import itertools

    from competition_pipeline import settings
    from competition_pipeline.fills.stream import STREAM, SUBJECT_PREFIX
    from competition_pipeline.tools.publish import journal_lines, live_lines, publish_lines

    # The stream and subjects the code location reads (FILL_STREAM, FILL_SUBJECT_PREFIX), never
    # the defaults alone: a local start on another stream must not write into the default one.
    config = settings.load()
    url = config.nats_url
    lines = itertools.chain(journal_lines(journal), live_lines(rate, 0))
    try:
        asyncio.run(
            publish_lines(
                url,
                lines,
                stream=config.stream or STREAM,
                prefix=config.subject_prefix or SUBJECT_PREFIX,
            )
        )
    except Exception as exc:  # noqa: BLE001 (the demo goes on; the runs will show the stream down)
        shown = redaction.scrub(f"{type(exc).__name__}: {exc}", extra=[url])
        log(f"publishing to {redaction.url(url)} stopped: {shown}")


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
        log(f"publishing the sample journal, then {args.rate} fills/s, to NATS")
    else:
        from competition_pipeline.tools import simulate

        appender = threading.Thread(
            target=simulate.append_live,
            kwargs={"root": journal, "rate_per_second": args.rate, "stop": stop},
            name="fill-simulator",
            daemon=True,
        )
        log(f"simulator appending {args.rate} fills/s to the open hour")
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
        preexec_fn=sigint_at_default,  # noqa: PLW1509
    )
    stop_requested: list[float] = []

    def request_stop(_signum: int, _frame: object) -> None:
        # Only signal here: waiting belongs to the loop below (Popen.wait is not reentrant).
        # SIGTERM to the whole group, once, as systemd stops a unit: dagster dev, its webserver,
        # daemon and code server, and the run workers (Dagster's processes take it as SIGINT)
        # each end their own way (the open hour's follower commits its load in progress and
        # hands the hour back); Dagster's helper processes end silently (a SIGINT to the group
        # would make each print a KeyboardInterrupt traceback).
        if not stop_requested and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
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
    45 s heartbeat timeout) before the embedded PostgreSQL it uses is stopped: SIGTERM once (a
    signal again and again would interrupt a run worker's clean end), SIGKILL after ``grace``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def cmd_up(args: argparse.Namespace) -> int:
    """Each step registers its own cleanup on the stack; they run in reverse order on exit."""
    state = local_state.state_dir()
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
        admin.schema_upgrade(os.environ["COMPETITION_DATABASE_URL"])  # migrations before any run
        state_file = local_state.write_local_state(
            state,
            ui=f"http://{args.host}:{args.port}",
            journal=str(journal),
            dagster_home=str(home),
        )
        stack.callback(state_file.unlink, missing_ok=True)
        log(f"competition database: {redaction.url(os.environ['COMPETITION_DATABASE_URL'])}")
        log(f"instance storage:     {redaction.url(os.environ['DAGSTER_POSTGRES_URL'])}")
        log(f"journal: {journal}   DAGSTER_HOME: {home}")
        log(f"UI: http://{args.host}:{args.port}")
        _start_metrics(args)
        log("in another shell: competition-pipeline standings demo | competition list | psql")
        return _run_dagster_dev(args, home)


def _start_metrics(args: argparse.Namespace) -> None:
    """The Prometheus exporter beside the UI (a daemon thread; it ends with the command)."""
    if not args.metrics_port:
        return
    from competition_pipeline.tools import metrics

    try:  # the product runs without its exporter rather than not at all
        metrics.serve(args.host, args.metrics_port)
        log(f"metrics: http://{args.host}:{args.metrics_port}/metrics")
    except OSError as exc:
        log(f"metrics exporter not started on port {args.metrics_port}: {exc}")
