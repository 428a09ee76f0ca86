"""PostgreSQL: the competition tables and the bulk, idempotent window load.

One window is one transaction (:meth:`LoadSession.window`, on a :meth:`CompetitionStore.session`):

1. an advisory lock on the window serializes concurrent loads of the same window;
2. rows and rejects are COPYed (psycopg 3) into temporary staging tables, batch by batch, so memory
   stays bounded however large the window;
3. conflicts are found in SQL: a staged row whose key ``(trade_id, wallet)`` is already recorded
   with other content, or (for a key not recorded yet) differs from the key's first staged
   occurrence. A message with a conflicting row is recorded in ``competition_fill_conflicts`` and
   none of its rows is written, so the first version always stands;
4. the rest is recorded: each new key is registered in ``competition_fill_keys`` (``ON CONFLICT
   DO NOTHING``) and only the rows whose keys it registered are inserted; the rejects go to
   ``competition_fill_rejects`` keyed by (window, file, line), so re-runs add nothing.

``competition_fill_events`` is partitioned by month on ``fill_ts`` (docs/operations.md, section 7):
its key ``(trade_id, wallet, fill_ts)`` contains the partition key, as PostgreSQL requires, and the
key registry ``competition_fill_keys`` keeps ``(trade_id, wallet)`` unique across all months. Every
statement that inserts fills writes the registry first; per-window reads name the window's
``fill_ts`` range so the planner reads one partition.

A crash anywhere before COMMIT leaves the window untouched. The schema is managed by Alembic
(:mod:`competition_pipeline.schema`); the metadata below describes the head revision.

No Dagster here. Every statement is parameterized; the few SQL fragments built in Python come from
the column constants of this module, never from data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy.pool import NullPool

from competition_pipeline import dburl
from competition_pipeline.rows import (
    REJECT_FIELDS,
    REJECT_TYPES,
    ROW_FIELDS,
    ROW_TYPES,
    Row,
    column_definitions,
)
from competition_pipeline.windows import Window

FILL_EVENTS = "competition_fill_events"
FILL_REJECTS = "competition_fill_rejects"
FILL_CONFLICTS = "competition_fill_conflicts"
FILL_WINDOWS = "competition_fill_windows"
FILL_KEYS = "competition_fill_keys"
# pg_advisory lock namespace (first key) for this project: "cp" in ASCII.
_LOCK_NAMESPACE = 0x6370
# A run's liveness lock (second key: hashtext(run_id), made non-negative): held by the run's
# worker on its own connection, so PostgreSQL releases it the moment the worker dies.
_RUN_LOCK_NAMESPACE = 0x6371

metadata = sa.MetaData()
_tz = sa.TIMESTAMP(timezone=True)

fill_events = sa.Table(
    FILL_EVENTS,
    metadata,
    sa.Column("trade_id", sa.BigInteger, primary_key=True),
    sa.Column("wallet", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("counterparty", sa.Text, nullable=False),
    sa.Column("is_self_trade", sa.Boolean, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("price", sa.Numeric, nullable=False),
    sa.Column("size", sa.Numeric, nullable=False),
    sa.Column("notional", sa.Numeric, nullable=False),
    sa.Column("fee", sa.Numeric, nullable=False),
    sa.Column("realized_pnl", sa.Numeric),
    sa.Column("builder_code_address", sa.Text),
    sa.Column("builder_code_fee", sa.Numeric),
    sa.Column("source_type", sa.Text, nullable=False),
    sa.Column("taker_order_id", sa.BigInteger, nullable=False),
    sa.Column("maker_order_id", sa.BigInteger, nullable=False),
    sa.Column("underlying_notional", sa.Numeric),
    # Part of the key: a partitioned table's unique key must contain the partition key.
    sa.Column("fill_ts", _tz, primary_key=True),
    sa.Column("window_start", _tz, nullable=False),
    sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("role IN ('taker', 'maker', 'self')", name="fill_events_role"),
    sa.CheckConstraint("side IN ('Buy', 'Sell')", name="fill_events_side"),
    sa.Index("ix_competition_fill_events_window_start", "window_start"),
    sa.Index("ix_competition_fill_events_wallet_fill_ts", "wallet", "fill_ts"),
    postgresql_partition_by="RANGE (fill_ts)",
)

# One row per (trade_id, wallet) ever recorded, with the first version's fill time: the global
# uniqueness the partitioned table cannot enforce, and the way to the one partition holding a key.
fill_keys = sa.Table(
    FILL_KEYS,
    metadata,
    sa.Column("trade_id", sa.BigInteger, primary_key=True),
    sa.Column("wallet", sa.Text, primary_key=True),
    sa.Column("fill_ts", _tz, nullable=False),
    postgresql_partition_by="HASH (trade_id)",
)

fill_rejects = sa.Table(
    FILL_REJECTS,
    metadata,
    sa.Column("window_start", _tz, primary_key=True),
    sa.Column("source_file", sa.Text, primary_key=True),
    sa.Column("line_no", sa.BigInteger, primary_key=True),
    sa.Column("raw_line", sa.Text, nullable=False),
    # True when raw_line had to be escaped (invalid UTF-8 or NUL): backslash doubled, \xNN bytes.
    sa.Column("raw_line_escaped", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
)

fill_conflicts = sa.Table(
    FILL_CONFLICTS,
    metadata,
    sa.Column("window_start", _tz, primary_key=True),
    sa.Column("source_file", sa.Text, primary_key=True),
    sa.Column("line_no", sa.BigInteger, primary_key=True),
    sa.Column("wallet", sa.Text, primary_key=True),
    sa.Column("trade_id", sa.BigInteger, nullable=False),
    sa.Column("conflicts_with", sa.Text, nullable=False),
    sa.Column("differing_fields", sa.Text, nullable=False),
    sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
)

# One row per window: what its latest load read (the extent, so that checks re-read exactly that
# data even after the journal has grown) and counted. Written in the load's own transaction.
fill_windows = sa.Table(
    FILL_WINDOWS,
    metadata,
    sa.Column("window_start", _tz, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("extent", sa.dialects.postgresql.JSONB, nullable=False),
    sa.Column("summary", sa.dialects.postgresql.JSONB, nullable=False),
    sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
)

# Competitions, their registered wallets and their standings (see standings.py).
competitions = sa.Table(
    "competitions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("start_ts", _tz, nullable=False),
    sa.Column("end_ts", _tz, nullable=False),
    sa.Column("primary_win_condition", sa.Text, nullable=False),
    sa.CheckConstraint("primary_win_condition IN ('pnl', 'volume')", name="competitions_win"),
    sa.CheckConstraint("start_ts < end_ts", name="competitions_period"),
)


def _competition_key() -> sa.Column:
    """``competition_id``: part of the key, removed with its competition."""
    return sa.Column(
        "competition_id",
        sa.Text,
        sa.ForeignKey("competitions.id", ondelete="CASCADE"),
        primary_key=True,
    )


competition_participants = sa.Table(
    "competition_participants",
    metadata,
    _competition_key(),
    sa.Column("wallet", sa.Text, primary_key=True),
    sa.Column("username", sa.Text),
    sa.CheckConstraint("wallet ~ '^0x[0-9a-f]{40}$'", name="participants_wallet"),
)

competition_standings = sa.Table(
    "competition_standings",
    metadata,
    _competition_key(),
    sa.Column("wallet", sa.Text, primary_key=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("pnl", sa.Numeric, nullable=False),
    sa.Column("volume", sa.Numeric, nullable=False),
    sa.Column("trades", sa.BigInteger, nullable=False),
    sa.Column("fees", sa.Numeric, nullable=False),
    sa.Column("medal", sa.SmallInteger),
    sa.Column("computed_at", _tz, nullable=False, server_default=sa.func.now()),
)

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


_REF_DISTINCT, _REF_FIELDS = _differs("s", "e", reference_staged=False)
_DUP_DISTINCT, _DUP_FIELDS = _differs("s", "sf", reference_staged=True)
_INSERT_COLUMNS = [c for c in fill_events.columns.keys() if c != "recorded_at"]
_INSERT_VALUES = [
    "s.price * s.size"
    if c == "notional"
    else _STAGE_FILL_TS.format(a="s")
    if c == "fill_ts"
    else "%(window_start)s"
    if c == "window_start"
    else f"s.{c}"
    for c in _INSERT_COLUMNS
]

_CAND_VALUES = ", ".join(
    f"{v} AS {c}" for v, c in zip(_INSERT_VALUES, _INSERT_COLUMNS, strict=True)
)

# Created once per connection (a load session records many windows); emptied at every commit or
# rollback, so each window's transaction starts with empty staging tables.
_SQL_STAGE = (
    f"CREATE TEMP TABLE stage_fills ({column_definitions(ROW_TYPES)}) ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE stage_rejects ({column_definitions(REJECT_TYPES)}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE stage_batch (LIKE stage_fills) ON COMMIT DELETE ROWS",
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
       'recorded row'::text AS conflicts_with, {_REF_FIELDS} AS differing_fields
FROM stage_fills s
-- One registry probe per staged row, then the recorded row in the one partition its fill_ts names
-- (run-time pruning; LIMIT 1 keeps the planner from turning this into a hash join that scans the
-- whole, ever-growing table for every window).
CROSS JOIN LATERAL (
    SELECT e0.* FROM {FILL_KEYS} k
    JOIN {FILL_EVENTS} e0
      ON e0.trade_id = k.trade_id AND e0.wallet = k.wallet AND e0.fill_ts = k.fill_ts
    WHERE k.trade_id = s.trade_id AND k.wallet = s.wallet
    LIMIT 1
) e
WHERE {_REF_DISTINCT}
UNION ALL
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet,
       sf.source_file || ':' || sf.line_no, {_DUP_FIELDS}
FROM stage_fills s
JOIN stage_firsts sf ON sf.trade_id = s.trade_id AND sf.wallet = s.wallet AND sf.seq <> s.seq
WHERE {_DUP_DISTINCT}
  AND NOT EXISTS (
      SELECT 1 FROM {FILL_KEYS} k
      JOIN {FILL_EVENTS} e
        ON e.trade_id = k.trade_id AND e.wallet = k.wallet AND e.fill_ts = k.fill_ts
      WHERE k.trade_id = s.trade_id AND k.wallet = s.wallet)"""
# The careful path's insert (partitioned table: no ON CONFLICT (trade_id, wallet) is possible on
# the parent). ``cand`` is the window's rows minus conflicts (first occurrence of a repeated key);
# ``reg`` registers their keys, returning only the keys registered now; a row is inserted when its
# key was registered now, or when its key was registered before with this very fill_ts but the row
# is missing (deleted by hand: a re-run repairs it, as before). The main query does not see
# ``reg``'s own inserts (one snapshot), so the two cases do not overlap.
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
)
INSERT INTO {{table}} ({{columns}})
SELECT {{columns}} FROM cand c
WHERE EXISTS (SELECT 1 FROM reg r WHERE r.trade_id = c.trade_id AND r.wallet = c.wallet)
   OR EXISTS (
       SELECT 1 FROM {FILL_KEYS} k
       WHERE k.trade_id = c.trade_id AND k.wallet = c.wallet AND k.fill_ts = c.fill_ts
         AND NOT EXISTS (
             SELECT 1 FROM {FILL_EVENTS} e
             WHERE e.trade_id = c.trade_id AND e.wallet = c.wallet AND e.fill_ts = c.fill_ts))"""
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
SELECT s.trade_id, s.wallet, {_STAGE_FILL_TS.format(a="s")} FROM {{table}} s"""
_SQL_INSERT_BATCH = f"""
INSERT INTO {FILL_EVENTS} ({", ".join(_INSERT_COLUMNS)})
SELECT {", ".join(_INSERT_VALUES)} FROM {{table}} s"""
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


class StoreError(Exception):
    """A database failure, with a message that names the cause and never the password."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """What one window's load did, in rows (a fill gives 1 or 2) and in messages."""

    rows_staged: int
    rows_inserted: int
    rows_already_present: int
    conflict_rows: int
    conflict_messages: int
    conflicts_recorded: int
    rejects_staged: int
    rejects_recorded: int


@dataclass(frozen=True, slots=True)
class StoredCounts:
    """Rows, rejects and conflicts stored under one window."""

    rows: int
    rejects: int
    conflicts: int

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "rejects": self.rejects, "conflicts": self.conflicts}


@dataclass(frozen=True, slots=True)
class PreviousLoad:
    """A window's latest committed load (``competition_fill_windows``) and what the window holds
    now: ``intact`` when its stored rows, rejects and conflicts are what that load left."""

    extent: dict[str, int]
    summary: dict
    now: StoredCounts | None = None

    @property
    def positions(self) -> dict[str, dict] | None:
        """The committed read offsets (journal), or None (never kept: stream, older releases)."""
        return self.summary.get("positions")

    @property
    def stored(self) -> StoredCounts | None:
        stored = self.summary.get("stored")
        return StoredCounts(**stored) if stored else None

    @property
    def intact(self) -> bool:
        return self.now is not None and self.now == self.stored

    @property
    def rows_digest(self) -> RowsDigest | None:
        """The digest of the rows the journal gave this load (see :class:`RowsDigest`)."""
        digest = self.summary.get("rows_digest")
        return RowsDigest.from_dict(digest) if digest else None


@dataclass(frozen=True, slots=True)
class CommittedWindow:
    """What a window has durably recorded: journal offsets, its extent (the stream position under
    ``nats:<stream>``), and when (a token that changes with every commit)."""

    positions: dict[str, dict] | None
    extent: dict[str, int]
    recorded_at: str


# Every per-window read of the fills names the window's fill_ts range too (a recorded fill's
# fill_ts is always inside its window): the planner then reads one month's partition.
_WINDOW_ROWS = (
    "window_start = %(window_start)s AND fill_ts >= %(window_start)s AND fill_ts < %(window_end)s"
)
_SQL_STORED_ROWS = f"SELECT count(*) FROM {FILL_EVENTS} WHERE {_WINDOW_ROWS}"
_SQL_STORED_SIDE_TABLES = (
    f"SELECT (SELECT count(*) FROM {FILL_REJECTS} WHERE window_start = %(window_start)s),"
    f" (SELECT count(*) FROM {FILL_CONFLICTS} WHERE window_start = %(window_start)s)"
)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The journal's rows for a window against the stored ones, by key and content (samples are
    sorted). ``compared_by`` is ``digest`` when the order-independent digests were equal and no
    row had to be compared, ``rows`` when the window was compared row by row."""

    expected_rows: int
    stored_rows: int
    missing: int
    unexpected: int
    missing_sample: list[tuple[int, str]]
    unexpected_sample: list[tuple[int, str]]
    changed: int = 0
    changed_sample: list[tuple[int, str]] = field(default_factory=list)
    compared_by: str = "rows"

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.unexpected == 0 and self.changed == 0


@dataclass(frozen=True, slots=True)
class RowsDigest:
    """An order-independent digest of a set of rows: their count and the sum of a 64-bit hash of
    each row's key and content. Computed by PostgreSQL alike over staged and stored rows, so a
    deleted, added or changed row changes it whatever the order the rows were read in."""

    rows: int
    hash_sum: int

    def as_dict(self) -> dict[str, int | str]:
        # A string: the sum of millions of 64-bit hashes outgrows what JSON numbers hold exactly.
        return {"rows": self.rows, "hash_sum": str(self.hash_sum)}

    @classmethod
    def from_dict(cls, data: dict) -> RowsDigest:
        return cls(int(data["rows"]), int(data["hash_sum"]))

    def __add__(self, other: RowsDigest) -> RowsDigest:
        return RowsDigest(self.rows + other.rows, self.hash_sum + other.hash_sum)


def _row_hash(alias: str, *, staged: bool) -> str:
    """SQL: a 64-bit hash of a row's key and content (every stored column that comes from the
    journal), the same for a staged row (ms timestamps) and the row it is stored as."""
    nullable = {c.name for c in fill_events.columns if c.nullable}
    parts = []
    for column in ROW_FIELDS[3:]:
        if column == "fill_ts_ms":
            expr = (
                f"{alias}.fill_ts_ms"
                if staged
                else f"(extract(epoch FROM {alias}.fill_ts) * 1000)::bigint"
            )
        else:
            expr = f"{alias}.{column}"
        parts.append(f"coalesce({expr}::text, '\\N')" if column in nullable else f"{expr}::text")
    return f"hashtextextended(concat_ws('|', {', '.join(parts)}), 0)"


_STAGED_HASH = _row_hash("s", staged=True)
_STORED_HASH = _row_hash("e", staged=False)
_SQL_DIGEST = "SELECT count(*), coalesce(sum({hash}::numeric), 0) FROM {source}"
_SQL_STORED_DIGEST = _SQL_DIGEST.format(
    hash=_STORED_HASH, source=f"{FILL_EVENTS} e WHERE e.window_start = %(window_start)s"
)


class WindowLoad:
    """An open window transaction: stage batches, then :meth:`finish` once."""

    def __init__(self, conn: psycopg.Connection, window: Window, *, insert: bool = True) -> None:
        self._conn = conn
        self._window = window
        self._params = {"window_start": window.start, "window_end": window.end}
        # Rows carry the window that recorded them, so the window's stored rows after this load
        # are these plus the ones it inserts (no count over millions of fresh rows at the end).
        self._stored_before: int = conn.execute(_SQL_STORED_ROWS, self._params).fetchone()[0]  # type: ignore[index]
        self._rows = 0
        self._rejects = 0
        # Every staged key was new so far, and is inserted already. A comparison only
        # (``insert=False``) never inserts: it must see the table as it is.
        self._fast_path = insert
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

        The first batch is copied into ``stage_fills`` itself, which then holds just that batch:
        a window of one batch (most hours) costs one COPY and one INSERT.
        """
        if not rows:
            return
        first = self._rows == 0  # empty batches are never staged
        table = "stage_fills" if first else "stage_batch"
        with self._conn.cursor() as cur, cur.copy(_copy_sql(table, ROW_FIELDS)) as copy:
            for row in rows:
                copy.write_row(row)
        self._rows += len(rows)
        if not first:
            self._conn.execute("INSERT INTO stage_fills SELECT * FROM stage_batch")
        if self._fast_path:
            try:
                with self._conn.transaction():  # a savepoint for this batch
                    self._conn.execute(_SQL_REGISTER_BATCH.format(table=table))
                    insert = _SQL_INSERT_BATCH.format(table=table)
                    self._fast_inserted += self._conn.execute(insert, self._params).rowcount
                # The batch as parsed (staged), every row of it now stored: its digest, while
                # the client parses the next batch.
                self._fast_digest += self._digest(f"{table} s")
            except psycopg.errors.UniqueViolation:
                self._fast_path = False
        if not first:
            self._conn.execute("TRUNCATE stage_batch")

    def stage_rejects(self, rejects: Iterable[tuple[str, int, str, bool, str]]) -> None:
        with (
            self._conn.cursor() as cur,
            cur.copy(_copy_sql("stage_rejects", REJECT_FIELDS)) as copy,
        ):
            for reject in rejects:
                copy.write_row(reject)
                self._rejects += 1

    def finish(self) -> LoadCounts:
        params = self._params
        cur = self._conn.cursor()
        if self._fast_path:
            cur.execute(_SQL_RECORD_REJECTS, params)
            self.rows_digest = self._fast_digest
            return LoadCounts(
                rows_staged=self._rows,
                rows_inserted=self._fast_inserted,
                rows_already_present=0,
                conflict_rows=0,
                conflict_messages=0,
                conflicts_recorded=0,
                rejects_staged=self._rejects,
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
            columns=", ".join(_INSERT_COLUMNS),
            values=_CAND_VALUES,
            distinct="DISTINCT ON (s.trade_id, s.wallet)" if has_duplicates else "",
            order="ORDER BY s.trade_id, s.wallet, s.seq" if has_duplicates else "",
        )
        cur.execute(insert, params)
        inserted = cur.rowcount + self._fast_inserted  # rows of the batches inserted before
        # What the window should hold: each key's first staged row, conflicting messages left out.
        self.rows_digest = self._digest(_EXPECTED_ROWS)
        cur.execute(_SQL_RECORD_CONFLICTS, params)
        conflicts_recorded = cur.rowcount
        cur.execute(_SQL_RECORD_REJECTS, params)
        rejects_recorded = cur.rowcount
        return LoadCounts(
            rows_staged=self._rows,
            rows_inserted=inserted,
            rows_already_present=self._rows - excluded_rows - inserted,
            conflict_rows=conflict_rows,
            conflict_messages=conflict_messages,
            conflicts_recorded=conflicts_recorded,
            rejects_staged=self._rejects,
            rejects_recorded=rejects_recorded,
        )

    def _digest(self, rows: str) -> RowsDigest:
        sql_text = _SQL_DIGEST.format(hash=_STAGED_HASH, source=rows)
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

    def reconcile(self, sample: int = 10) -> Reconciliation:
        """Staged rows (minus recorded conflicts) against the stored rows of the window, by key
        and by content."""
        params = self._params
        cur = self._conn.cursor()
        cur.execute(_SQL_RECONCILE, params)
        cur.execute("SELECT side, count(*) FROM reconcile_diff GROUP BY side")
        counts = dict(cur.fetchall())
        samples: dict[str, list[tuple[int, str]]] = {}
        for side in ("missing", "unexpected", "changed"):
            cur.execute(
                "SELECT trade_id, wallet FROM reconcile_diff WHERE side = %s"
                " ORDER BY trade_id, wallet LIMIT %s",
                (side, sample),
            )
            samples[side] = [tuple(r) for r in cur.fetchall()]  # type: ignore[misc]
        cur.execute(
            f"SELECT (SELECT count(*) FROM (SELECT DISTINCT trade_id, wallet FROM stage_fills) k),"
            f" (SELECT count(*) FROM {FILL_EVENTS} WHERE {_WINDOW_ROWS})",
            params,
        )
        expected, stored = cur.fetchone()  # type: ignore[misc]
        return Reconciliation(
            expected_rows=expected,
            stored_rows=stored,
            missing=counts.get("missing", 0),
            unexpected=counts.get("unexpected", 0),
            missing_sample=samples["missing"],
            unexpected_sample=samples["unexpected"],
            changed=counts.get("changed", 0),
            changed_sample=samples["changed"],
        )


# The rows a window should hold, from its staged rows: each key's first staged row, the rows of
# recorded conflicting messages left out (the first version stands, elsewhere).
_EXPECTED_ROWS = """(
    SELECT DISTINCT ON (s.trade_id, s.wallet) s.* FROM stage_fills s
    WHERE NOT EXISTS (SELECT 1 FROM stage_conflicts c WHERE c.seq = s.seq)
    ORDER BY s.trade_id, s.wallet, s.seq
) s"""
_SQL_RECONCILE = f"""
CREATE TEMP TABLE reconcile_diff ON COMMIT DROP AS
WITH expected AS (
    SELECT DISTINCT ON (s.trade_id, s.wallet) s.trade_id, s.wallet, {_STAGED_HASH} AS h
    FROM stage_fills s
    WHERE NOT EXISTS (
        SELECT 1 FROM {FILL_CONFLICTS} c
        WHERE c.window_start = %(window_start)s
          AND c.source_file = s.source_file AND c.line_no = s.line_no)
    ORDER BY s.trade_id, s.wallet, s.seq
), stored AS (
    SELECT e.trade_id, e.wallet, {_STORED_HASH} AS h
    FROM {FILL_EVENTS} e WHERE {_WINDOW_ROWS}
)
SELECT CASE WHEN s.trade_id IS NULL THEN 'missing'
            WHEN x.trade_id IS NULL THEN 'unexpected'
            ELSE 'changed' END AS side,
       coalesce(x.trade_id, s.trade_id) AS trade_id, coalesce(x.wallet, s.wallet) AS wallet
FROM expected x FULL JOIN stored s ON s.trade_id = x.trade_id AND s.wallet = x.wallet
WHERE x.trade_id IS NULL OR s.trade_id IS NULL OR x.h <> s.h"""


def _copy_sql(table: str, columns: Iterable[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


class LoadSession:
    """An open connection that loads windows one after another, each in its own transaction.

    A backfill records hundreds of windows in one run: one connection and one set of staging
    tables for all of them keeps the per-window cost to the statements that window needs.
    """

    def __init__(self, store: CompetitionStore, conn: psycopg.Connection) -> None:
        self._store = store
        self._conn = conn

    @contextmanager
    def window(self, window: Window, *, commit: bool = True) -> Iterator[WindowLoad]:
        """One window's transaction, under the window's advisory lock. ``commit=False`` is a
        comparison: rows are staged but never inserted, and everything is rolled back."""
        conn = self._conn
        try:
            if commit:
                self._store.ensure_month(conn, window)
            with conn.transaction() as transaction:
                hour = window.start_ms // 3_600_000
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, hour))
                yield WindowLoad(conn, window, insert=commit)
                if not commit:
                    raise psycopg.Rollback(transaction)
        except psycopg.Error as exc:
            raise self._store._error("database error in", exc) from None


class CompetitionStore:
    """The competition database at ``url`` (any accepted PostgreSQL URL form)."""

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        dburl.parse(url)  # fail early, without echoing the URL, when it is not a PostgreSQL URL
        self._url = url
        self._connect_timeout = connect_timeout
        self._shared: psycopg.Connection | None = None
        self._sharing = False

    @property
    def display_url(self) -> str:
        return dburl.redacted(self._url)

    def connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(
                dburl.libpq(self._url),
                connect_timeout=self._connect_timeout,
                application_name="competition-pipeline",
            )
        except psycopg.Error as exc:
            raise self._error("cannot connect to", exc) from None

    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine over the same connections (for schema work and ad-hoc reads)."""
        return sa.create_engine("postgresql+psycopg://", creator=self.connect, poolclass=NullPool)

    def ensure_schema(self) -> list[str]:
        """Bring the tables to the head revision (Alembic ``upgrade head`` under the schema lock;
        idempotent, race-free); returns the revisions applied."""
        from competition_pipeline import schema

        try:
            return schema.upgrade(self)
        except schema.SchemaError as exc:
            raise StoreError(dburl.scrub(str(exc), self._url), retryable=False) from None
        except sa.exc.DBAPIError as exc:
            raise self._error("cannot migrate the schema in", exc.orig) from None

    def ensure_month(self, conn: psycopg.Connection, window: Window) -> None:
        """Create the month partition of ``window`` if it is missing, in its own short transaction
        before the window's: creating a partition locks the whole table, which must not be held
        for a window load. One function call (no DDL rights needed) when the month exists."""
        with conn.transaction():
            first_day = window.start.date().replace(day=1)
            conn.execute("SELECT competition_create_month(%s)", (first_day,))

    @contextmanager
    def session(self) -> Iterator[LoadSession]:
        """One connection with its staging tables, for loading any number of windows in turn."""
        conn = self.connect()
        try:
            with conn.transaction():
                for statement in _SQL_STAGE:
                    conn.execute(statement)
            yield LoadSession(self, conn)
        except psycopg.Error as exc:
            raise self._error("database error in", exc) from None
        finally:
            conn.close()

    @contextmanager
    def window_staging(self, window: Window) -> Iterator[WindowLoad]:
        """Staging tables for a read-only comparison (:meth:`WindowLoad.reconcile`), rolled back."""
        with self.session() as session, session.window(window, commit=False) as load:
            yield load

    def previous_loads(self, windows: Iterable[Window]) -> dict[Window, PreviousLoad]:
        """The latest committed load of each of ``windows`` that has one, with the window's
        stored counts now (one query; the counts use the ``window_start`` indexes)."""
        by_start = {w.start: w for w in windows}
        rows = self._read(
            f"SELECT w.window_start, w.extent, w.summary,"
            f" (SELECT count(*) FROM {FILL_EVENTS} e WHERE e.window_start = w.window_start"
            f"  AND e.fill_ts >= w.window_start AND e.fill_ts < w.window_start + interval '1h'),"
            f" (SELECT count(*) FROM {FILL_REJECTS} r WHERE r.window_start = w.window_start),"
            f" (SELECT count(*) FROM {FILL_CONFLICTS} c WHERE c.window_start = w.window_start)"
            f" FROM {FILL_WINDOWS} w WHERE w.window_start = ANY(%s)",
            list(by_start),
        )
        return {
            by_start[start]: PreviousLoad(extent, summary, StoredCounts(*counts))
            for start, extent, summary, *counts in rows
        }

    def committed_positions(self) -> dict[Window, CommittedWindow]:
        """Every recorded window's committed offsets and stream position (one query): what the
        sensor compares with the journal or the stream to find the windows that are behind."""
        rows = self._read(
            f"SELECT window_start, summary->'positions', extent, recorded_at FROM {FILL_WINDOWS}"
        )
        return {
            Window(start): CommittedWindow(positions, extent, recorded_at.isoformat())
            for start, positions, extent, recorded_at in rows
        }

    def window_digest(self, window: Window) -> RowsDigest:
        """The digest of the rows stored for the window (one pass over its index range)."""
        ((count, hash_sum),) = self._read(_SQL_STORED_DIGEST, {"window_start": window.start})
        return RowsDigest(count, int(hash_sum))

    def window_conflicts(self, window: Window, limit: int = 1000) -> list[tuple]:
        """(source_file, line_no, trade_id, wallet, differing_fields) recorded for the window."""
        return self._read(
            f"SELECT source_file, line_no, trade_id, wallet, differing_fields FROM {FILL_CONFLICTS}"
            " WHERE window_start = %s ORDER BY source_file, line_no, wallet LIMIT %s",
            window.start,
            limit,
        )

    def window_rejects(self, window: Window, sample: int = 5) -> tuple[dict[str, int], list]:
        """Rejects of the window counted by kind (the reason up to its first colon), and samples."""
        by_kind = self._read(
            f"SELECT split_part(reason, ':', 1), count(*) FROM {FILL_REJECTS}"
            " WHERE window_start = %s GROUP BY 1 ORDER BY 2 DESC, 1",
            window.start,
        )
        samples = self._read(
            f"SELECT source_file, line_no, reason FROM {FILL_REJECTS} WHERE window_start = %s"
            " ORDER BY source_file, line_no LIMIT %s",
            window.start,
            sample,
        )
        return dict(by_kind), samples

    @contextmanager
    def holding_run_lock(self, run_id: str) -> Iterator[None]:
        """Hold ``run_id``'s liveness lock while the block runs, on a connection of its own: a
        run that holds it is alive; a dead worker's lock is gone with its connection."""
        conn = self.connect()
        try:
            conn.autocommit = True
            conn.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s) & 2147483647)",
                (_RUN_LOCK_NAMESPACE, run_id),
            )
            yield
        except psycopg.Error as exc:
            raise self._error("database error in", exc) from None
        finally:
            conn.close()

    def runs_holding_lock(self, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` have a live worker holding their liveness lock (pg_locks only:
        nothing is locked by asking)."""
        rows = self._read(
            "SELECT r FROM unnest(%s::text[]) r WHERE EXISTS ("
            " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s AND l.objid = (hashtext(r) & 2147483647)::oid"
            " AND l.objsubid = 2)",
            list(run_ids),
            _RUN_LOCK_NAMESPACE,
        )
        return {run_id for (run_id,) in rows}

    @contextmanager
    def shared_connection(self) -> Iterator[None]:
        """Reads inside share one connection (opened by the first of them) instead of one each:
        a backfill's per-window checks, where a new connection costs more than a small window's
        queries."""
        self._sharing = True
        try:
            yield
        finally:
            shared, self._shared, self._sharing = self._shared, None, False
            if shared is not None:
                shared.close()

    def _read(self, statement: str, *params: object) -> list[tuple]:
        bound = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
        try:
            if self._sharing:
                if self._shared is None or self._shared.closed:
                    self._shared = self.connect()
                    self._shared.autocommit = True  # one round trip a read, no BEGIN/COMMIT
                return self._shared.execute(statement, bound).fetchall()  # type: ignore[arg-type]
            with self.connect() as conn:
                return conn.execute(statement, bound).fetchall()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise self._error("query failed on", exc) from None

    def _error(self, doing: str, exc: BaseException | None) -> StoreError:
        detail = " ".join(str(exc).split()) if exc is not None else "unknown error"
        retryable = isinstance(exc, psycopg.OperationalError) and not isinstance(
            exc, psycopg.errors.InsufficientPrivilege
        )
        kind = type(exc).__name__ if exc is not None else "Error"
        message = f"{doing} {self.display_url}: {kind}: {detail}"
        return StoreError(dburl.scrub(message, self._url), retryable=retryable)
