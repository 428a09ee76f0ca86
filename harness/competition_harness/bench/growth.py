"""Figure g: the first recording into an empty table, then into one of N stored rows."""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from pathlib import Path

import psycopg

from competition_harness.bench.common import (
    record_in_child,
)
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import embedded, simulate
from competition_pipeline.tools.log import log
from competition_pipeline.tools.progress import Progress

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
    progress = Progress("g. storing rows", log)
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
            log("g: no CHECKPOINT privilege (pg_checkpoint); a checkpoint may fall into g")


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
            log("g. first recording into an empty table")
            empty = record_in_child(url, journal, "g empty", G_EMPTY)
            log(f"g. storing {stored_rows:,} rows")
            _fill_stored(url, stored_rows)
            log(f"g. first recording at {stored_rows:,} stored rows")
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
