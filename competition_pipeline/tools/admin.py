"""The admin commands: ``schema``, ``psql``, ``competition``, ``standings`` and ``metrics``.

They use COMPETITION_DATABASE_URL (DAGSTER_POSTGRES_URL) when it is set, else the running local
start's (``local_state.database_url``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys

from competition_pipeline.store import dburl
from competition_pipeline.tools.local_state import database_url
from competition_pipeline.tools.log import log


def _store():
    from competition_pipeline.store.database import CompetitionStore

    store = CompetitionStore(database_url())
    store.ensure_schema()
    return store


def cmd_schema(_args: argparse.Namespace) -> int:
    schema_upgrade(database_url())
    return 0


def schema_upgrade(url: str) -> None:
    """Alembic ``upgrade head`` (competition_pipeline.store.schema), saying what it applied."""
    from competition_pipeline.store import schema
    from competition_pipeline.store.database import CompetitionStore

    store = CompetitionStore(url)
    applied = store.ensure_schema()
    for revision in applied:
        log(f"applied migration {revision}")
    log(f"schema at revision {schema.head()} in {store.display_url}")


def _psql_binary() -> str | None:
    found = shutil.which("psql")
    if found:
        return found
    try:
        from competition_pipeline.tools import embedded
    except ImportError:
        return None
    bindir = embedded.postgres_bindir("psql")
    return str(bindir / "psql") if bindir else None


def cmd_psql(args: argparse.Namespace) -> int:
    """psql on the database; the password (if any) travels in PGPASSWORD, never on argv."""
    url = database_url(dagster=args.dagster)
    secret = dburl.password(url)
    parsed = dburl.parse(url)
    if len(dburl.hosts_of(parsed)) > 1:  # psql reads several hosts from a conninfo, not ?host=h:p
        plain = dburl.libpq(url, with_password=False)
    else:
        # Neither the userinfo's password nor a password= parameter goes on psql's command line.
        plain = parsed._replace(password=None, drivername="postgresql")
        plain = plain.difference_update_query(["password"])
        plain = plain.render_as_string(hide_password=False)
    binary = _psql_binary()
    if binary is None or args.print:
        prefix = "PGPASSWORD=... " if secret else ""
        print(f"{prefix}psql '{plain}'")
        if binary is None:
            log("psql is not installed (apt-get install postgresql-client): the command above")
        return 0
    env = dict(os.environ)
    if secret:
        env["PGPASSWORD"] = secret
    extra = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
    os.execve(binary, [binary, *extra, plain], env)
    return 0  # not reached


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        print(
            f"error: {printable(text)!r} is not a time: ISO 8601, e.g. 2026-12-01T00:00Z",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences among them) shown as
    ``\\xNN`` instead of being sent to the terminal, which would obey them."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


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
        elif args.action == "recount-totals":
            from competition_pipeline.fills.windows import Window

            for key in args.windows:
                window = Window.from_key(key)
                competitions.store.recount_totals(window)
                print(f"recounted the totals of {window.key} from its rows")
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
                        "computed_at": _iso(s.computed_at),
                        "through_fill_ts": _iso(s.through_fill_ts),
                        "through_trade_id": s.through_trade_id,
                    }
                    for s in rows
                ],
                indent=2,
            )
        )
        return 0
    print(_computed_line(rows[0]))
    print(
        f"{'rank':>4}  {'wallet':<42}  {'user':<12} {'pnl':>16} {'volume':>18} {'trades':>7} medal"
    )
    for s in rows:
        print(
            f"{s.rank:>4}  {s.wallet:<42}  {printable(s.username or ''):<12} {s.pnl:>16}"
            f" {s.volume:>18} "
            f"{s.trades:>7} {s.medal or ''}"
        )
    return 0


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _computed_line(first) -> str:  # noqa: ANN001 (a Standing)
    """When the standings were computed and up to which fill (every row of a competition's
    standings carries the same stamp: they are replaced in one transaction)."""
    computed = first.computed_at.astimezone(dt.UTC)
    age = (dt.datetime.now(dt.UTC) - computed).total_seconds()
    line = f"computed {computed:%Y-%m-%d %H:%M:%S} UTC ({age:.0f} s ago) from every fill committed"
    line += " by then"
    if first.through_fill_ts is None:
        return line + "; no fill of the period recorded yet"
    through = f"{first.through_fill_ts.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3]
    return f"{line}; up to the fill of {through} UTC (trade {first.through_trade_id})"


def cmd_metrics(args: argparse.Namespace) -> int:
    from competition_pipeline.tools import metrics

    server, thread = metrics.serve(args.host, args.port)
    log(f"metrics on http://{args.host}:{args.port}/metrics")
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0
