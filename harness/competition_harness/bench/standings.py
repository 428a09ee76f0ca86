"""Figures s and x: the standings refresh at scale, and what the dropped index cost recording.

s. A journal of ``--s-days`` days (8,000 fills an hour by default: 16,000 rows, 2,000 wallets of
   which the competitions' 50 are registered, some self-trades, PnL on a third of the fills,
   builder fees on a fifth) stored server-side (untimed; the per-window totals counted from them
   with the migration's statement, as the loads would have written them). Then, for
   competitions of 1, 3, 10 and 30 days ending at the journal's end (both edges inside an hour),
   the refresh before (the previous release's rows-only query, with its ``(wallet, fill_ts)``
   index, the index built untimed) and after (``Competitions.refresh``: totals of the whole
   windows, rows of the two edge windows, the newest fill), in the same run on the same rows,
   and both results compared rank by rank. The journal grows in steps (10, then 30 days), each
   measured.
x. The first recording of the benchmark window (figure b, child process) with and without the
   ``(wallet, fill_ts)`` index, alternated twice on a truncated table, each beside a plain COPY
   of the same rows into a copy of the table as it then is (figure a): what recording gains by
   the drop, against the floor that the same index also weighs on.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from competition_harness.bench.baseline import plain_copy
from competition_harness.bench.common import Databases, record_in_child
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.store.standings import Competitions
from competition_pipeline.store.tables import FILL_TOTALS
from competition_pipeline.store.totals import TOTAL_COLUMNS, aggregate
from competition_pipeline.tools.log import log
from competition_pipeline.tools.progress import Progress

#: The journal's first hour; it grows forward from here.
S_START = Window.from_key("2026-09-01-00:00").start
S_WALLETS = 2_000
S_REGISTERED = 50
S_COMPETITION_DAYS = (1, 3, 10, 30)
_BATCH = 2_000_000  # generated rows a statement

INDEX = "ix_competition_fill_events_wallet_fill_ts"
_CREATE_INDEX = f"CREATE INDEX {INDEX} ON competition_fill_events (wallet, fill_ts)"

# Rows as the pipeline stores them: a fill gives a taker and a maker row, or one row when both
# are the same wallet (a self-trade); trade ids grow with time.
_FILLS = """
WITH f AS (
    SELECT n AS trade_id,
           %(start)s::timestamptz + (n - %(first)s) * %(step)s * interval '1 microsecond' AS ts,
           (n * 7919) %% %(wallets)s AS taker, (n * 104729 + 17) %% %(wallets)s AS maker
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) n
), r AS (
    SELECT f.*, leg FROM f, generate_series(0, 1) leg WHERE NOT (leg = 1 AND taker = maker)
)
INSERT INTO competition_fill_events (trade_id, wallet, role, side, counterparty, is_self_trade,
    symbol, price, size, notional, fee, realized_pnl, builder_code_fee, source_type,
    taker_order_id, maker_order_id, fill_ts, window_start)
SELECT trade_id,
       '0x' || lpad(to_hex(CASE WHEN leg = 0 THEN taker ELSE maker END), 40, '0'),
       CASE WHEN taker = maker THEN 'self' WHEN leg = 0 THEN 'taker' ELSE 'maker' END,
       CASE WHEN leg = 0 THEN 'Buy' ELSE 'Sell' END,
       '0x' || lpad(to_hex(CASE WHEN leg = 0 THEN maker ELSE taker END), 40, '0'),
       taker = maker, 'BTC-PERP', 100 + (trade_id %% 1000) * 0.1, ((trade_id %% 7) + 1) * 0.25,
       (100 + (trade_id %% 1000) * 0.1) * (((trade_id %% 7) + 1) * 0.25),
       CASE WHEN leg = 0 THEN 0.38 ELSE -0.05 END,
       CASE WHEN trade_id %% 3 = leg THEN ((trade_id %% 200) - 100) * 0.5 END,
       CASE WHEN leg = 0 AND trade_id %% 5 = 0 THEN 0.02 END,
       'orderbook', trade_id * 2, trade_id * 2 + 1, ts, date_trunc('hour', ts)
FROM r"""


_COUNT_TOTALS = (
    f"INSERT INTO {FILL_TOTALS} (window_start, wallet, {', '.join(TOTAL_COLUMNS)})"
    f" {aggregate('competition_fill_events WHERE window_start >= %s AND window_start < %s')}"
)


def _store_days(url: str, first_day: int, days: int, fills_per_hour: int) -> int:
    """Days ``[first_day, first_day + days)`` of fills, stored with their windows' totals."""
    step = 3_600_000_000 // fills_per_hour
    per_day = 24 * fills_per_hour
    first_fill = 1
    lo, hi = first_fill + first_day * per_day, first_fill + (first_day + days) * per_day
    start, end = S_START + first_day * 24 * HOUR, S_START + (first_day + days) * 24 * HOUR
    progress = Progress(f"s. storing days {first_day + 1}..{first_day + days}", log)
    with CompetitionStore(url).connect() as conn:
        conn.autocommit = True
        day = start.date().replace(day=1)
        while day < end.date():
            conn.execute("SELECT competition_create_month(%s)", (day,))
            day = (day + dt.timedelta(days=32)).replace(day=1)
        for batch in range(lo, hi, _BATCH // 2):
            top = min(batch + _BATCH // 2, hi) - 1
            conn.execute(
                _FILLS,
                {
                    "start": S_START,
                    "first": first_fill,
                    "step": step,
                    "wallets": S_WALLETS,
                    "lo": batch,
                    "hi": top,
                },
            )
            progress(top - lo + 1, hi - lo)
        conn.execute(_COUNT_TOTALS, (start, end))
        conn.execute("VACUUM ANALYZE competition_fill_events")
        conn.execute(f"VACUUM ANALYZE {FILL_TOTALS}")
        rows = conn.execute("SELECT count(*) FROM competition_fill_events").fetchone()[0]
    return rows


# The previous release's refresh, as it ran (store/standings.py before migration 0007).
_BEFORE = """
WITH stats AS (
    SELECT p.wallet,
           COALESCE(sum(COALESCE(e.realized_pnl, 0) - e.fee - COALESCE(e.builder_code_fee, 0)), 0)
               AS pnl,
           COALESCE(sum(e.price * e.size), 0) AS volume,
           count(e.trade_id) AS trades,
           COALESCE(sum(e.fee), 0) AS fees
    FROM competition_participants p
    JOIN competitions c ON c.id = p.competition_id
    LEFT JOIN competition_fill_events e
           ON e.wallet = p.wallet AND NOT e.is_self_trade
          AND e.fill_ts >= c.start_ts AND e.fill_ts < c.end_ts
          AND e.fill_ts >= %(start)s AND e.fill_ts < %(end)s
    WHERE p.competition_id = %(id)s
    GROUP BY p.wallet
), ranked AS (
    SELECT s.*, row_number() OVER (
        ORDER BY CASE WHEN %(win)s = 'pnl' THEN s.pnl ELSE s.volume END DESC,
                 CASE WHEN %(win)s = 'pnl' THEN s.volume ELSE s.pnl END DESC,
                 s.wallet ASC) AS rank
    FROM stats s
)
SELECT wallet, rank, pnl, volume, trades, fees FROM ranked ORDER BY rank"""
# Its whole refresh statement: the standings and the newest fill of the period, inserted.
_BEFORE_REPLACE = f"""
WITH newest AS (
    SELECT fill_ts, trade_id FROM competition_fill_events
    WHERE fill_ts >= %(start)s AND fill_ts < %(end)s AND window_start = (
        SELECT max(window_start) FROM competition_fill_events
        WHERE fill_ts >= %(start)s AND fill_ts < %(end)s)
    ORDER BY fill_ts DESC, trade_id DESC LIMIT 1
)
INSERT INTO competition_standings
    (competition_id, wallet, rank, pnl, volume, trades, fees, through_fill_ts, through_trade_id)
SELECT %(id)s, r.*, n.fill_ts, n.trade_id FROM ({_BEFORE}) r LEFT JOIN newest n ON true"""


def _timed_replace(conn: psycopg.Connection, statement: str, params: dict) -> float:
    """Seconds of one refresh statement on an open connection, in a transaction rolled back (the
    standings table as it was: each measurement replaces the same rows)."""
    with conn.transaction() as transaction:
        conn.execute("DELETE FROM competition_standings WHERE competition_id = %(id)s", params)
        started = time.perf_counter()
        conn.execute(statement, params)
        seconds = time.perf_counter() - started
        raise psycopg.Rollback(transaction)
    return seconds


def _competitions(url: str, days_stored: int) -> list[tuple[str, int]]:
    """Competitions of each of ``S_COMPETITION_DAYS`` that fit, ending 19 minutes before the
    journal's end and starting 41 minutes into an hour (both edges partial windows)."""
    end = S_START + days_stored * 24 * HOUR - 19 * dt.timedelta(minutes=1)
    competitions = Competitions(CompetitionStore(url))
    made = []
    for days in S_COMPETITION_DAYS:
        if days > days_stored:
            continue
        cid = f"s{days_stored}d_{days}d"
        competitions.create(cid, cid, end - days * 24 * HOUR, end, "pnl")
        for k in range(S_REGISTERED):
            competitions.register(cid, "0x" + format(k, "040x"))
        made.append((cid, days))
    return made


def _refreshes(url: str, days_stored: int, repeats: int) -> dict:
    """Each competition's refresh statement before (rows only, with the index) and after
    (totals), on one open connection, the same rows; and the whole refresh after
    (``Competitions.refresh``: its connections, the replace, the rows read back), compared with
    the rows-only standings."""
    from competition_pipeline.store.standings import _REPLACE, period_params

    competitions = Competitions(CompetitionStore(url))
    result: dict = {}
    made = _competitions(url, days_stored)
    with CompetitionStore(url).connect() as conn:
        conn.autocommit = True
        log(f"s. building the old (wallet, fill_ts) index over {days_stored} days (untimed)")
        started = time.perf_counter()
        conn.execute(_CREATE_INDEX)
        conn.execute("ANALYZE competition_fill_events")
        index_seconds = time.perf_counter() - started
        for cid, days in made:
            params = period_params(conn, cid)
            log(f"s. {days}-day competition over {days_stored} days: before (rows only)")
            before = _timed_replace(conn, _BEFORE_REPLACE, params)
            result[f"{days}d"] = {
                "before_seconds": before,
                "before_rows": conn.execute(_BEFORE, params).fetchall(),
            }
        conn.execute(f"DROP INDEX {INDEX}")
        for cid, days in made:
            log(f"s. {days}-day competition over {days_stored} days: after (totals), x{repeats}")
            params = period_params(conn, cid)
            times = [_timed_replace(conn, _REPLACE, params) for _ in range(repeats)]
            whole = []
            for _ in range(repeats):
                started = time.perf_counter()
                rows = competitions.refresh(cid)
                whole.append(time.perf_counter() - started)
            after_rows = [(s.wallet, s.rank, s.pnl, s.volume, s.trades, s.fees) for s in rows]
            entry = result[f"{days}d"]
            after = statistics.median(times)
            entry.update(
                after_seconds=after,
                after_seconds_all=times,
                refresh_seconds=statistics.median(whole),
                refresh_seconds_all=whole,
                equal=after_rows == entry.pop("before_rows"),
                speedup=entry["before_seconds"] / after,
            )
            if not entry["equal"]:
                log(f"s. {cid}: the standings from the totals differ from the rows'")
    result["index_build_seconds"] = index_seconds
    return result


def standings_figure(databases: Databases, steps: list[int], fills_per_hour: int) -> dict:
    """(s) The journal grown to each of ``steps`` days, the refreshes measured at each."""
    url = databases.new("s")
    CompetitionStore(url).ensure_schema()
    result: dict = {"fills_per_hour": fills_per_hour, "steps": {}}
    stored_days = 0
    for days in steps:
        started = time.perf_counter()
        rows = _store_days(url, stored_days, days - stored_days, fills_per_hour)
        log(f"s. {rows:,} rows stored ({time.perf_counter() - started:.0f}s, untimed)")
        stored_days = days
        with CompetitionStore(url).connect() as conn:
            totals = conn.execute("SELECT count(*) FROM competition_fill_window_totals")
            totals = totals.fetchone()[0]
        result["steps"][f"{days}d"] = {
            "rows": rows,
            "totals_rows": totals,
            "refresh": _refreshes(url, days, repeats=5),
        }
    return result


def s_table(s: dict) -> str:
    lines = [
        f"s. standings refresh ({s['fills_per_hour']:,} fills/hour, 50 wallets registered;"
        " statement on an open connection, and the whole refresh after)",
        f"{'journal':<8} {'rows':>12} {'totals':>10} {'period':>7} {'before ms':>10}"
        f" {'after ms':>9} {'x':>6} {'refresh ms':>11} equal",
    ]
    for journal, step in s["steps"].items():
        refresh = step["refresh"]
        for days in S_COMPETITION_DAYS:
            entry = refresh.get(f"{days}d")
            if entry is None:
                continue
            lines.append(
                f"{journal:<8} {step['rows']:>12,} {step['totals_rows']:>10,} {days:>6}d "
                f"{entry['before_seconds'] * 1000:>10.1f} {entry['after_seconds'] * 1000:>9.1f}"
                f" {entry['speedup']:>6.1f} {entry['refresh_seconds'] * 1000:>11.1f}"
                f" {entry['equal']}"
            )
        ratio = [refresh[k]["after_seconds"] for k in ("1d", "10d") if k in refresh]
        if len(ratio) == 2:
            lines.append(f"{journal:<8} after: 10-day / 1-day statement {ratio[1] / ratio[0]:.2f}")
    return "\n".join(lines)


#: Run with another checkout's package first on the path: its schema, as its release makes it.
_OTHER_SCHEMA = (
    "import sys; from competition_pipeline.store.database import CompetitionStore;"
    " CompetitionStore(sys.argv[1]).ensure_schema()"
)
_TABLES = (
    "competition_fill_events",
    "competition_fill_keys",
    "competition_fill_windows",
    "competition_fill_rejects",
    "competition_fill_conflicts",
)


def index_figure(
    databases: Databases, journal: Path, rounds: int = 2, before_code: Path | None = None
) -> dict:
    """(x) b and a with and without the (wallet, fill_ts) index (this code: the totals written
    either way), and with ``before_code`` the release before (its schema: the index, no totals),
    alternated ``rounds`` times on an emptied table (same window, same rows)."""
    url = databases.new("x")
    store = CompetitionStore(url)
    store.ensure_schema()
    labels = ["with_index", "without_index"]
    urls = {"with_index": url, "without_index": url}
    if before_code is not None:
        urls["before_code"] = databases.new("xb")
        env = {**os.environ, "PYTHONPATH": str(before_code)}
        subprocess.run(
            [sys.executable, "-c", _OTHER_SCHEMA, urls["before_code"]],
            env=env,
            cwd=before_code,
            check=True,
        )
        labels.insert(0, "before_code")
    result: dict = {label: [] for label in labels}
    for n in range(rounds):
        for label in labels:
            with CompetitionStore(urls[label]).connect() as conn:
                conn.autocommit = True
                tables = [*_TABLES] + ([] if label == "before_code" else [FILL_TOTALS])
                conn.execute(f"TRUNCATE {', '.join(tables)}")
                if label != "before_code":
                    conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
                    if label == "with_index":
                        conn.execute(_CREATE_INDEX)
                conn.execute("VACUUM ANALYZE competition_fill_events")
                try:
                    conn.execute("CHECKPOINT")
                except psycopg.errors.InsufficientPrivilege:
                    pass
            log(f"x. round {n + 1}, {label.replace('_', ' ')}: a (plain COPY), b (recording)")
            a = plain_copy(urls[label], journal)
            code = before_code if label == "before_code" else None
            b = record_in_child(urls[label], journal, f"x {label}", code=code)
            result[label].append({"a": a, "b": b})
    for label in labels:
        runs = result[label]
        for fig, key in (("b", "rows_per_second"), ("a", "rows_per_second")):
            result[f"{label}_{fig}_rows_per_second"] = statistics.median(r[fig][key] for r in runs)
        result[f"{label}_a2_rows_per_second"] = statistics.median(
            r["a"]["with_registry_rows_per_second"] for r in runs
        )
    return result


def x_table(x: dict) -> str:
    lines = [
        f"{'x. first recording, index':<30} {'b rows/s':>10} {'a rows/s':>10} {'b/a':>6}"
        f" {'a2 rows/s':>10} {'b/a2':>6}"
    ]
    labels = [k for k in ("before_code", "with_index", "without_index") if k in x]
    for label in labels:
        b, a = x[f"{label}_b_rows_per_second"], x[f"{label}_a_rows_per_second"]
        a2 = x[f"{label}_a2_rows_per_second"]
        name = "before (its code)" if label == "before_code" else label.replace("_", " ")
        lines.append(
            f"{name:<30} {b:>10,.0f} {a:>10,.0f} {b / a:>6.2f} {a2:>10,.0f} {b / a2:>6.2f}"
        )
    gain = x["without_index_b_rows_per_second"] / x["with_index_b_rows_per_second"]
    floor = x["without_index_a_rows_per_second"] / x["with_index_a_rows_per_second"]
    lines.append(f"b without/with index rows/s {gain:.2f}   a without/with {floor:.2f}")
    if "before_code" in x:
        change = x["without_index_b_rows_per_second"] / x["before_code_b_rows_per_second"]
        lines.append(f"b this code (no index, totals) / before rows/s {change:.2f}")
    return "\n".join(lines)
