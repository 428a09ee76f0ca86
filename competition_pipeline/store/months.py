"""The month partitions of ``competition_fill_events``: created ahead, and retired after retention.

``create_ahead`` calls ``competition_create_month`` (migration 0002) for this month and the next
ones; any role may run it (the function is SECURITY DEFINER), and the loader itself creates a
missing month before a window of it (:meth:`CompetitionStore.ensure_month`).

``retire`` takes months whose end is older than the retention out of the table: ``DETACH
PARTITION ... CONCURRENTLY`` (loads of other months go on), optionally a gzipped CSV archive
(``COPY``, the table's columns in order), then in one transaction ``DROP TABLE`` and the month's
keys, windows, per-window totals, rejects and conflicts, keeping what the month added to the
lifetime counters (``counters.py``) and marking each of its hours retired
(``competition_fill_retired``: never requested again; a rebuild restores one). It refuses a
month that a running or future competition overlaps (its standings are recomputed from the rows
present), and never touches the history partition of the cutover. It needs the tables' owner
(DDL). A run interrupted after the detach finishes on the next run: detached month tables are
found by name. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from competition_pipeline.store.counters import SQL_KEEP_MONTH
from competition_pipeline.store.database import (
    FILL_CONFLICTS,
    FILL_EVENTS,
    FILL_KEYS,
    FILL_REJECTS,
    FILL_WINDOWS,
    CompetitionStore,
)
from competition_pipeline.store.tables import FILL_RETIRED
from competition_pipeline.store.totals import SQL_DELETE_MONTH

_SQL_MARK_RETIRED = f"""
INSERT INTO {FILL_RETIRED} (window_start, month_table)
SELECT generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 hour',
                       interval '1 hour'), %(table)s
ON CONFLICT (window_start) DO NOTHING"""
_MONTH_TABLE = re.compile(rf"{FILL_EVENTS}_(\d{{4}})_(\d{{2}})")


def first_day(day: dt.date, months: int = 0) -> dt.date:
    """The first day of ``day``'s month shifted by ``months``."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Month:
    table: str
    first_day: dt.date
    attached: bool

    @property
    def start(self) -> dt.datetime:
        return _utc(self.first_day)

    @property
    def end(self) -> dt.datetime:
        return _utc(first_day(self.first_day, 1))


@dataclass
class Retirement:
    """What a retention run did: months dropped (with their archive file), and months refused."""

    cutoff: dt.date
    dropped: list[str] = field(default_factory=list)
    archived: dict[str, str] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)


def create_ahead(
    store: CompetitionStore, months: int = 2, *, today: dt.date | None = None
) -> list[dt.date]:
    """Create this month's partition and the next ``months`` ones; returns the months created."""
    today = today or dt.datetime.now(dt.UTC).date()
    created = []
    with store.connect() as conn:
        for n in range(months + 1):
            day = first_day(today, n)
            with conn.transaction():
                if conn.execute("SELECT competition_create_month(%s)", (day,)).fetchone()[0]:
                    created.append(day)
    return created


def list_months(conn: psycopg.Connection) -> list[Month]:
    """Every month table of competition_fill_events, attached or detached (a retention run that
    stopped between its detach and its drop leaves one)."""
    rows = conn.execute(
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid"
        " AND i.inhparent = %s::regclass) FROM pg_class c"
        " WHERE c.relkind = 'r' AND c.relname LIKE %s AND pg_table_is_visible(c.oid)"
        " ORDER BY c.relname",
        (FILL_EVENTS, FILL_EVENTS + r"\_____\___"),
    ).fetchall()
    months = []
    for name, attached in rows:
        if m := _MONTH_TABLE.fullmatch(name):
            months.append(Month(name, dt.date(int(m[1]), int(m[2]), 1), attached))
    return months


def retire(
    store: CompetitionStore,
    older_than_months: int,
    *,
    archive_dir: Path | None = None,
    today: dt.date | None = None,
    dry_run: bool = False,
) -> Retirement:
    """Detach, archive (optional) and drop every month that ended before the first day of the
    month ``older_than_months`` before ``today``'s; refuses months a running competition covers."""
    if older_than_months < 1:
        raise ValueError("retention must keep at least the current and the previous month")
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = first_day(today, -older_than_months)
    result = Retirement(cutoff)
    with store.connect() as conn:
        conn.autocommit = True  # DETACH ... CONCURRENTLY refuses a transaction block
        for month in list_months(conn):
            if month.first_day >= cutoff:
                continue
            running = conn.execute(
                "SELECT id FROM competitions WHERE start_ts < %s AND end_ts > %s"
                " AND end_ts > now() ORDER BY id",
                (month.end, month.start),
            ).fetchall()
            if running:
                result.refused[month.table] = [r[0] for r in running]
                continue
            if dry_run:
                result.dropped.append(month.table)
                continue
            table = sql.Identifier(month.table)
            if month.attached:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                        sql.Identifier(FILL_EVENTS), table
                    )
                )
            if archive_dir is not None:
                result.archived[month.table] = str(_archive(conn, month, archive_dir))
            with conn.transaction():
                conn.execute(sql.SQL("DROP TABLE {}").format(table))
                bounds = {"lo": month.start, "hi": month.end}
                # What the month added to the lifetime counters stays counted (they never
                # fall), and every hour of it is retired: the follow rule never asks for it
                # again, however long the journal keeps it; only a rebuild restores one.
                conn.execute(SQL_KEEP_MONTH, {**bounds, "cause": f"retention {month.table}"})
                conn.execute(_SQL_MARK_RETIRED, {**bounds, "table": month.table})
                # Kept, the keys would make a replay of the month report its rows "already
                # present" while they are gone. The registry has no fill_ts index: one full read
                # of it per retired month.
                deletes = [(FILL_KEYS, "fill_ts")] + [
                    (side, "window_start") for side in (FILL_WINDOWS, FILL_REJECTS, FILL_CONFLICTS)
                ]
                # The month's per-window totals go with its rows (the standings read them).
                conn.execute(SQL_DELETE_MONTH, bounds)
                for name, column in deletes:
                    conn.execute(
                        sql.SQL("DELETE FROM {} WHERE {} >= %(lo)s AND {} < %(hi)s").format(
                            sql.Identifier(name), sql.Identifier(column), sql.Identifier(column)
                        ),
                        bounds,
                    )
            result.dropped.append(month.table)
    return result


def _archive(conn: psycopg.Connection, month: Month, directory: Path) -> Path:
    """The month's rows as gzipped CSV with a header, written under a temporary name first."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{month.table}.csv.gz"
    partial = path.with_suffix(".gz.partial")
    statement = sql.SQL("COPY {} TO STDOUT WITH (FORMAT csv, HEADER)").format(
        sql.Identifier(month.table)
    )
    with gzip.open(partial, "wb") as out, conn.cursor() as cur, cur.copy(statement) as copy:
        for block in copy:
            out.write(block)
    partial.replace(path)
    return path
