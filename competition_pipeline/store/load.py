"""The bulk, idempotent load of one window: staging, the fast and the careful path, their SQL.

One window is one transaction (opened by
:meth:`~competition_pipeline.store.database.LoadSession.window`):

1. an advisory lock on the window (:func:`lock_window`) serializes concurrent loads of the same
   window, and the reconciliation's comparison of it;
2. rows and rejects are COPYed (psycopg 3) into temporary staging tables, batch by batch, so memory
   stays bounded however large the window; while every key is new, each batch is inserted at once
   (the fast path);
3. otherwise (the careful path) conflicts are found in SQL: a staged row whose key
   ``(trade_id, wallet)`` is already recorded with other content, or (for a key not recorded yet)
   differs from the key's first staged occurrence. A message with a conflicting row is recorded in
   ``competition_fill_conflicts`` and none of its rows is written, so the first version always
   stands;
4. the rest is recorded: each new key is registered in ``competition_fill_keys`` (``ON CONFLICT
   DO NOTHING``) and only the rows whose keys it registered are inserted; the rejects go to
   ``competition_fill_rejects`` keyed by (window, file, line), so re-runs add nothing;
5. every insert of rows stages the totals of the rows it inserted, in the same statement, and
   the load adds them to the window's (``competition_fill_window_totals``,
   :mod:`~competition_pipeline.store.totals`) before it commits, so the standings read totals
   that are always those of the committed rows.

A crash anywhere before COMMIT leaves the window untouched. Driver errors are left to the store's
error boundary (:func:`competition_pipeline.store.database.wrap_errors`). No Dagster here. Every
statement is parameterized; the few SQL fragments built in Python come from the column constants of
this module and of :mod:`~competition_pipeline.store.tables`, never from data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from competition_pipeline.fills.rows import (
    REJECT_FIELDS,
    REJECT_TYPES,
    ROW_FIELDS,
    ROW_TYPES,
    Row,
    column_definitions,
)
from competition_pipeline.fills.windows import Window
from competition_pipeline.store import totals
from competition_pipeline.store.digest import SQL_DIGEST, STAGED_HASH, RowsDigest
from competition_pipeline.store.tables import (
    FILL_CONFLICTS,
    FILL_EVENTS,
    FILL_KEYS,
    FILL_REJECTS,
    FILL_WINDOWS,
    WINDOW_ROWS,
    fill_events,
    recorded_row,
    window_params,
)

# pg_advisory lock namespace (first key) for this project: "cp" in ASCII.
_LOCK_NAMESPACE = 0x6370

# The content that makes two records of one (trade_id, wallet) the same fill (contract, section 2:
# price, size, wallets, symbol, timestamp; role and side follow from the wallets and taker side).
_CONTENT = ("symbol", "price", "size", "fill_ts", "side", "role", "counterparty")
_STAGE_FILL_TS = "(timestamptz 'epoch' + {a}.fill_ts_ms * interval '1 millisecond')"


def _content(alias: str, *, staged: bool) -> list[str]:
    """SQL expressions of the content columns of a staged (ms timestamps) or a recorded row."""
    return [
        _STAGE_FILL_TS.format(a=alias) if c == "fill_ts" and staged else f"{alias}.{c}"
        for c in _CONTENT
    ]


def _differs(staged: str, reference: str, *, reference_staged: bool) -> tuple[str, str]:
    """SQL: a row comparison of the content columns, and the list of the columns that differ."""
    s = _content(staged, staged=True)
    r = _content(reference, staged=reference_staged)
    distinct = f"({', '.join(s)}) IS DISTINCT FROM ({', '.join(r)})"
    names = ", ".join(
        f"CASE WHEN {a} IS DISTINCT FROM {b} THEN '{c}' END"
        for a, b, c in zip(s, r, _CONTENT, strict=True)
    )
    return distinct, f"concat_ws(',', {names})"


REF_DISTINCT, REF_FIELDS = _differs("s", "e", reference_staged=False)
DUP_DISTINCT, DUP_FIELDS = _differs("s", "sf", reference_staged=True)
INSERT_COLUMNS = [c for c in fill_events.columns.keys() if c != "recorded_at"]
_INSERT_VALUES = [
    "s.price * s.size"
    if c == "notional"
    else _STAGE_FILL_TS.format(a="s")
    if c == "fill_ts"
    else "%(window_start)s"
    if c == "window_start"
    else f"s.{c}"
    for c in INSERT_COLUMNS
]

CAND_VALUES = ", ".join(f"{v} AS {c}" for v, c in zip(_INSERT_VALUES, INSERT_COLUMNS, strict=True))

# Created once per connection (a load session records many windows); emptied at every commit or
# rollback, so each window's transaction starts with empty staging tables.
SQL_STAGE_FILLS = (
    f"CREATE TEMP TABLE stage_fills ({column_definitions(ROW_TYPES)}) ON COMMIT DELETE ROWS"
)
SQL_STAGE = (
    SQL_STAGE_FILLS,
    f"CREATE TEMP TABLE stage_rejects ({column_definitions(REJECT_TYPES)}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE stage_batch (LIKE stage_fills) ON COMMIT DELETE ROWS",
    totals.SQL_STAGE_TOTALS,
)
_SQL_DUP_KEYS = """
CREATE TEMP TABLE stage_dup_keys ON COMMIT DROP AS
SELECT trade_id, wallet FROM stage_fills GROUP BY trade_id, wallet HAVING count(*) > 1"""
_SQL_FIRSTS = """
CREATE TEMP TABLE stage_firsts ON COMMIT DROP AS
SELECT DISTINCT ON (s.trade_id, s.wallet) s.*
FROM stage_fills s JOIN stage_dup_keys USING (trade_id, wallet)
ORDER BY s.trade_id, s.wallet, s.seq"""
_SQL_CONFLICTS = f"""
CREATE TEMP TABLE stage_conflicts ON COMMIT DROP AS
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet,
       'recorded row'::text AS conflicts_with, {REF_FIELDS} AS differing_fields
FROM stage_fills s
CROSS JOIN LATERAL {recorded_row("s")} e
WHERE {REF_DISTINCT}
UNION ALL
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet,
       sf.source_file || ':' || sf.line_no, {DUP_FIELDS}
FROM stage_fills s
JOIN stage_firsts sf ON sf.trade_id = s.trade_id AND sf.wallet = s.wallet AND sf.seq <> s.seq
WHERE {DUP_DISTINCT}
  AND NOT EXISTS {recorded_row("s")}"""
# The careful path's insert (partitioned table: no ON CONFLICT (trade_id, wallet) is possible on
# the parent). ``cand`` is the window's rows minus conflicts (first occurrence of a repeated key);
# ``reg`` registers their keys, returning only the keys registered now; a row is inserted when its
# key was registered now, or when its key was registered before with this very fill_ts but the row
# is missing (deleted by hand: a re-run repairs it, as before). The main query does not see
# ``reg``'s own inserts (one snapshot), so the two cases do not overlap. The rows inserted
# (``ins``) stage their totals (``tot``, store/totals.py) in the same statement, which returns
# how many they are; a row repaired (its key registered before) was never taken out
# of the totals (only a hand deletes a row and not its key), so it adds nothing.
_REGISTERED_NOW = (
    "(SELECT i.* FROM ins i WHERE EXISTS"
    " (SELECT 1 FROM reg r WHERE r.trade_id = i.trade_id AND r.wallet = i.wallet)) ins"
)
_SQL_INSERT = f"""
WITH cand AS (
    SELECT {{distinct}} {{values}}
    FROM stage_fills s
    WHERE NOT EXISTS (SELECT 1 FROM stage_conflicts c WHERE c.seq = s.seq)
    {{order}}
), reg AS (
    INSERT INTO {FILL_KEYS} (trade_id, wallet, fill_ts)
    SELECT trade_id, wallet, fill_ts FROM cand
    ON CONFLICT (trade_id, wallet) DO NOTHING
    RETURNING trade_id, wallet
), ins AS (
    INSERT INTO {{table}} ({{columns}})
    SELECT {{columns}} FROM cand c
    WHERE EXISTS (SELECT 1 FROM reg r WHERE r.trade_id = c.trade_id AND r.wallet = c.wallet)
       OR EXISTS (
           SELECT 1 FROM {FILL_KEYS} k
           WHERE k.trade_id = c.trade_id AND k.wallet = c.wallet AND k.fill_ts = c.fill_ts
             AND NOT EXISTS (
                 SELECT 1 FROM {FILL_EVENTS} e
                 WHERE e.trade_id = c.trade_id AND e.wallet = c.wallet
                   AND e.fill_ts = c.fill_ts))
    RETURNING trade_id, {", ".join(totals.ROW_INPUTS)}
), tot AS (INSERT INTO stage_totals {totals.aggregate(_REGISTERED_NOW)})
SELECT count(*) FROM ins"""
# The fast path's batch: its keys registered first, in the same savepoint, so a key recorded
# before (in any month) or repeated raises UniqueViolation in the registry, exactly as the
# unpartitioned table's primary key did, and sends the window down the careful path.
# MERGE NOTE: every statement that writes competition_fill_events must register the same keys in
# competition_fill_keys in the same savepoint, before it: the partitioned table's own key contains
# fill_ts, so only the registry refuses a second version of a fill. A fast path that COPYs rows
# straight into competition_fill_events must also COPY (trade_id, wallet, fill_ts) into
# competition_fill_keys first (a UniqueViolation there means: take the careful path).
_SQL_REGISTER_BATCH = f"""
INSERT INTO {FILL_KEYS} (trade_id, wallet, fill_ts)
SELECT s.trade_id, s.wallet, {_STAGE_FILL_TS.format(a="s")} FROM ONLY {{table}} s"""
# The batch's rows stage their totals in the same statement (store/totals.py): one row per
# wallet and batch, added to the window's once, at the load's end.
_SQL_INSERT_BATCH = totals.add_inserted(
    f"INSERT INTO {FILL_EVENTS} ({', '.join(INSERT_COLUMNS)})"
    f" SELECT {', '.join(_INSERT_VALUES)} FROM ONLY {{table}} s"
)
# A later batch's staging table: part of stage_fills (inheritance) for the careful path, gone at
# the end of the window's transaction.
_SQL_STAGE_CHILD = "CREATE TEMP TABLE {} () INHERITS (stage_fills) ON COMMIT DROP"
#: The most batch tables one window creates (2M rows); later batches go through stage_batch.
_STAGE_TABLES = 100
_SQL_RECORD_CONFLICTS = f"""
INSERT INTO {FILL_CONFLICTS}
    (window_start, source_file, line_no, wallet, trade_id, conflicts_with, differing_fields)
SELECT %(window_start)s, source_file, line_no, wallet, trade_id, conflicts_with, differing_fields
FROM stage_conflicts
ON CONFLICT DO NOTHING"""
_SQL_RECORD_REJECTS = f"""
INSERT INTO {FILL_REJECTS} (window_start, source_file, line_no, raw_line, raw_line_escaped, reason)
SELECT %(window_start)s, source_file, line_no, raw_line, raw_line_escaped, reason FROM stage_rejects
ON CONFLICT DO NOTHING"""


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """What one window's load did, in rows (a fill gives 1 or 2) and in messages."""

    rows_inserted: int
    rows_already_present: int
    conflict_messages: int
    conflicts_recorded: int
    rejects_recorded: int


@dataclass(frozen=True, slots=True)
class StoredCounts:
    """Rows, rejects and conflicts stored under one window."""

    rows: int
    rejects: int
    conflicts: int

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "rejects": self.rejects, "conflicts": self.conflicts}


_SQL_STORED_ROWS = f"SELECT count(*) FROM {FILL_EVENTS} WHERE {WINDOW_ROWS}"
_SQL_STORED_SIDE_TABLES = (
    f"SELECT (SELECT count(*) FROM {FILL_REJECTS} WHERE window_start = %(window_start)s),"
    f" (SELECT count(*) FROM {FILL_CONFLICTS} WHERE window_start = %(window_start)s)"
)


class WindowLoad:
    """An open window transaction: stage batches, then :meth:`finish` once."""

    def __init__(self, conn: psycopg.Connection, window: Window) -> None:
        self._conn = conn
        self._window = window
        self._params = window_params(window)
        # Rows carry the window that recorded them, so the window's stored rows after this load
        # are these plus the ones it inserts (no count over millions of fresh rows at the end).
        self._stored_before: int = conn.execute(_SQL_STORED_ROWS, self._params).fetchone()[0]  # type: ignore[index]
        self._rows = 0
        self._batches = 0
        # Every staged key was new so far, and is inserted already.
        self._fast_path = True
        self._fast_inserted = 0
        self._fast_digest = RowsDigest(0, 0)
        #: The digest of the rows the journal gave for the window (set by :meth:`finish`).
        self.rows_digest: RowsDigest | None = None

    def stage_rows(self, rows: Sequence[Row]) -> None:
        """COPY one batch into staging and, while every key so far was new, insert it at once.

        The fast path (a first recording): each batch goes straight into the table under its
        own savepoint, so the server inserts while the client parses the next batch. The first
        key that is already recorded, or repeated, makes the unique index refuse that batch: its
        savepoint is rolled back and :meth:`finish` takes the careful path over all staged rows
        (the batches inserted before stay, and count as inserted).

        The first batch is copied into ``stage_fills`` itself; each later one into a table of its
        own that inherits from it (dropped at commit), so the batch's statements read just the
        batch while ``stage_fills`` holds every staged row, no row ever copied twice. A window of
        one batch (most hours) costs one COPY and one INSERT. Past ``_STAGE_TABLES`` batches
        (windows of millions of rows), batches are appended to the last such table instead,
        which bounds the tables (and locks) one transaction holds.
        """
        if not rows:
            return
        if self._batches == 0:
            table = "stage_fills"
        elif self._batches <= _STAGE_TABLES:
            table = f"stage_fills_{self._batches}"
            self._conn.execute(sql.SQL(_SQL_STAGE_CHILD).format(sql.Identifier(table)))
        else:
            table = "stage_batch"
        self._batches += 1
        copy_rows(self._conn, table, ROW_FIELDS, rows)
        self._rows += len(rows)
        if table == "stage_batch":
            self._conn.execute(f"INSERT INTO stage_fills_{_STAGE_TABLES} SELECT * FROM stage_batch")
        if self._fast_path:
            try:
                with self._conn.transaction():  # a savepoint for this batch
                    self._conn.execute(_SQL_REGISTER_BATCH.format(table=table))
                    insert = _SQL_INSERT_BATCH.format(table=table)
                    self._fast_inserted += self._conn.execute(insert, self._params).fetchone()[0]  # type: ignore[index]
                # The batch as parsed (staged), every row of it now stored: its digest, while
                # the client parses the next batch.
                self._fast_digest += self._digest(f"ONLY {table} s")
            except psycopg.errors.UniqueViolation:
                self._fast_path = False
        if table == "stage_batch":
            self._conn.execute("TRUNCATE stage_batch")

    def stage_rejects(self, rejects: Iterable[tuple[str, int, str, bool, str]]) -> None:
        copy_rows(self._conn, "stage_rejects", REJECT_FIELDS, rejects)

    def finish(self) -> LoadCounts:
        params = self._params
        cur = self._conn.cursor()
        if self._fast_path:
            cur.execute(totals.SQL_ADD_STAGED)
            cur.execute(_SQL_RECORD_REJECTS, params)
            self.rows_digest = self._fast_digest
            return LoadCounts(
                rows_inserted=self._fast_inserted,
                rows_already_present=0,
                conflict_messages=0,
                conflicts_recorded=0,
                rejects_recorded=cur.rowcount,
            )
        cur.execute("ANALYZE stage_fills")
        cur.execute(_SQL_DUP_KEYS)
        has_duplicates = cur.rowcount > 0
        cur.execute(_SQL_FIRSTS)
        cur.execute(_SQL_CONFLICTS)
        cur.execute("SELECT count(*), count(DISTINCT seq) FROM stage_conflicts")
        conflict_rows, conflict_messages = cur.fetchone()  # type: ignore[misc]
        excluded_rows = 0
        if conflict_rows:
            cur.execute(
                "SELECT count(*) FROM stage_fills s"
                " WHERE EXISTS (SELECT 1 FROM stage_conflicts c WHERE c.seq = s.seq)"
            )
            excluded_rows = cur.fetchone()[0]  # type: ignore[index]
        # Without duplicate keys in the batch, the DISTINCT ON sort is pure cost: skip it.
        insert = _SQL_INSERT.format(
            table=FILL_EVENTS,
            columns=", ".join(INSERT_COLUMNS),
            values=CAND_VALUES,
            distinct="DISTINCT ON (s.trade_id, s.wallet)" if has_duplicates else "",
            order="ORDER BY s.trade_id, s.wallet, s.seq" if has_duplicates else "",
        )
        # Rows inserted now, plus those of the batches inserted before.
        inserted = cur.execute(insert, params).fetchone()[0] + self._fast_inserted  # type: ignore[index]
        cur.execute(totals.SQL_ADD_STAGED)
        # What the window should hold: each key's first staged row, conflicting messages left out.
        self.rows_digest = self._digest(_EXPECTED_ROWS)
        cur.execute(_SQL_RECORD_CONFLICTS, params)
        conflicts_recorded = cur.rowcount
        cur.execute(_SQL_RECORD_REJECTS, params)
        rejects_recorded = cur.rowcount
        return LoadCounts(
            rows_inserted=inserted,
            rows_already_present=self._rows - excluded_rows - inserted,
            conflict_messages=conflict_messages,
            conflicts_recorded=conflicts_recorded,
            rejects_recorded=rejects_recorded,
        )

    def _digest(self, rows: str) -> RowsDigest:
        sql_text = SQL_DIGEST.format(hash=STAGED_HASH, source=rows)
        count, hash_sum = self._conn.execute(sql_text).fetchone()  # type: ignore[misc]
        return RowsDigest(count, int(hash_sum))

    def stored_after(self, counts: LoadCounts) -> StoredCounts:
        """What the window holds once this load commits (kept to recognise an intact window)."""
        cur = self._conn.execute(_SQL_STORED_SIDE_TABLES, self._params)
        rejects, conflicts = cur.fetchone()  # type: ignore[misc]
        return StoredCounts(self._stored_before + counts.rows_inserted, rejects, conflicts)

    def save_window(self, source: str, extent: dict[str, int], summary: dict) -> None:
        """Record what this load read and counted (the window's row in competition_fill_windows)."""
        self._conn.execute(
            f"INSERT INTO {FILL_WINDOWS} (window_start, source, extent, summary)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (window_start) DO UPDATE SET"
            " source = EXCLUDED.source, extent = EXCLUDED.extent, summary = EXCLUDED.summary,"
            " recorded_at = now()",
            (self._window.start, source, Jsonb(extent), Jsonb(summary)),
        )


# The rows a window should hold, from its staged rows: each key's first staged row, the rows of
# recorded conflicting messages left out (the first version stands, elsewhere).
_EXPECTED_ROWS = """(
    SELECT DISTINCT ON (s.trade_id, s.wallet) s.* FROM stage_fills s
    WHERE NOT EXISTS (SELECT 1 FROM stage_conflicts c WHERE c.seq = s.seq)
    ORDER BY s.trade_id, s.wallet, s.seq
) s"""


def copy_rows(
    conn: psycopg.Connection, table: str, columns: Iterable[str], rows: Iterable[Sequence]
) -> None:
    """COPY ``rows`` (tuples in ``columns`` order) into ``table``: how every staged batch, of
    rows or of rejects, reaches the server (the load, the comparison, the rebuild)."""
    with conn.cursor() as cur, cur.copy(copy_sql(table, columns)) as copy:
        for row in rows:
            copy.write_row(row)


def copy_sql(table: str, columns: Iterable[str]) -> sql.Composed:
    """``COPY table (columns) FROM STDIN``, names quoted as identifiers."""
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def lock_window(conn: psycopg.Connection, window: Window) -> None:
    """Take the window's advisory lock for the open transaction: a load or a comparison of the
    window waits for the one in progress to commit, so it sees what that one left."""
    hour = window.start_ms // 3_600_000
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, hour))
