"""Figure a: a plain COPY of the window's rows (a', the server-formatted text; a2, with the
key registry): the baseline the recording (b) is measured against."""

from __future__ import annotations

import time
from decimal import Context, Decimal
from pathlib import Path

import psycopg

from competition_harness.bench.common import (
    BENCH_WINDOW,
)
from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.rows import ROW_FIELDS
from competition_pipeline.fills.windows import utc_from_ms
from competition_pipeline.recording.fill_events import parse_window
from competition_pipeline.store.database import CompetitionStore, fill_events

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
    for batch, _ in parse_window(JournalSource(journal), BENCH_WINDOW):
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
