"""Changing recorded history: one window re-derived, diffed against its stored rows, replaced.

Recording never rewrites a stored row (``load.py``); a rebuild is the explicit operation for a
change of the recording rules. Its unit is a load's: one window, one transaction, under the
window's advisory lock (:func:`~competition_pipeline.store.load.lock_window`), so it and a
recording of the same window run one after the other.

1. The window's journal rows (parsed by the current code) are staged as a load stages them, and
   the rows the window should hold are derived in SQL as a first recording into an empty window
   would: each key's first version, conflicting messages left out, keys recorded under another
   window left to it.
2. They are compared with the window's stored rows by ``(trade_id, wallet)`` and field
   (:class:`WindowDiff`), and so are its rejects and conflicts.
3. A dry run stops there, in a ``READ ONLY`` transaction: PostgreSQL itself refuses any write to
   a table that is not this session's temporary table.
4. Applied (the tables' owner only: it deletes and upserts), the same transaction keeps every
   superseded row whole in ``competition_fill_revisions``, removes the rows that no longer derive
   and the old versions of changed ones, inserts the new versions and keys (a fill whose
   timestamp moved it to another month moves with it), replaces the window's rejects, conflicts
   and committed offsets, restores a retired window, keeps what retention or a rebuild took from
   the counters' tables in ``competition_fill_counter_offsets``, and writes the audit row
   (``competition_fill_rebuilds``) an undo restores from. Readers see the window before or after,
   never half-replaced or empty.

Undo (:meth:`RebuildSession.undo`) replays one rebuild's revisions the other way, per window in
one transaction, and is itself audited. No Dagster here. Every statement is parameterized; the SQL
built in Python comes from the column constants of ``tables.py`` and ``load.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from competition_pipeline.fills.rows import REJECT_FIELDS, ROW_FIELDS, Row
from competition_pipeline.fills.windows import Window
from competition_pipeline.store.compare import DIFF_COLUMNS, exact_row
from competition_pipeline.store.counters import REJECT_RULE, counters_of
from competition_pipeline.store.digest import SQL_DIGEST, STORED_HASH, RowsDigest
from competition_pipeline.store.load import (
    CAND_VALUES,
    DUP_DISTINCT,
    DUP_FIELDS,
    INSERT_COLUMNS,
    REF_DISTINCT,
    REF_FIELDS,
    SQL_STAGE,
    copy_sql,
    lock_window,
)
from competition_pipeline.store.standings import period_params, standings_sql
from competition_pipeline.store.tables import (
    COUNTER_OFFSETS,
    FILL_CONFLICTS,
    FILL_EVENTS,
    FILL_KEYS,
    FILL_REBUILDS,
    FILL_REJECTS,
    FILL_RETIRED,
    FILL_REVISIONS,
    FILL_WINDOWS,
    fill_events,
)

_ALL_COLUMNS = ", ".join(fill_events.columns.keys())

#: What an apply or an undo writes, by table: checked before anything is done, so the recorder's
#: role (SELECT and INSERT) fails at once with the URL to set instead of half way.
OWNER_PRIVILEGES = {
    FILL_EVENTS: ("INSERT", "UPDATE", "DELETE"),
    FILL_KEYS: ("INSERT", "UPDATE", "DELETE"),
    FILL_REJECTS: ("INSERT", "DELETE"),
    FILL_CONFLICTS: ("INSERT", "DELETE"),
    FILL_WINDOWS: ("INSERT", "UPDATE", "DELETE"),
    FILL_RETIRED: ("INSERT", "DELETE"),
    FILL_REBUILDS: ("INSERT", "UPDATE"),
    FILL_REVISIONS: ("INSERT",),
    COUNTER_OFFSETS: ("INSERT",),
}

# Temporary tables, made once per session: the dry run's READ ONLY transaction may write them
# but could not create them. Per window (emptied at every commit or rollback) and per range.
_SQL_SESSION = (
    *SQL_STAGE[:2],
    f"CREATE TEMP TABLE rb_rows (LIKE {FILL_EVENTS} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE rb_stored (LIKE {FILL_EVENTS}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE rb_conflicts (seq bigint, source_file text, line_no bigint,"
    " trade_id bigint, wallet text, conflicts_with text, differing_fields text)"
    " ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE rb_diff (change text, trade_id bigint, wallet text, fields text,"
    " moves boolean)"
    " ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE rb_elsewhere (LIKE {FILL_EVENTS}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE rb_dups (trade_id bigint, wallet text) ON COMMIT DELETE ROWS",
    # The range's derived rows and its windows, for the standings effect (kept across commits).
    f"CREATE TEMP TABLE rb_range_rows (LIKE {FILL_EVENTS}) ON COMMIT PRESERVE ROWS",
    "CREATE TEMP TABLE rb_range_windows (window_start timestamptz PRIMARY KEY)"
    " ON COMMIT PRESERVE ROWS",
)

# The staged keys recorded under another window, with that recorded row: only keys the window
# does not hold itself are looked up in the registry (on a rebuild of a recorded window, none or
# a few: one probe each instead of one per staged row).
_SQL_ELSEWHERE = f"""
INSERT INTO rb_elsewhere
SELECT e.* FROM (
    SELECT DISTINCT s.trade_id, s.wallet FROM stage_fills s
    WHERE NOT EXISTS (
        SELECT 1 FROM rb_stored o WHERE o.trade_id = s.trade_id AND o.wallet = s.wallet)
) c
CROSS JOIN LATERAL (
    SELECT e0.* FROM {FILL_KEYS} k
    JOIN {FILL_EVENTS} e0
      ON e0.trade_id = k.trade_id AND e0.wallet = k.wallet AND e0.fill_ts = k.fill_ts
    WHERE k.trade_id = c.trade_id AND k.wallet = c.wallet
    LIMIT 1
) e
WHERE e.window_start <> %(window_start)s"""
_SQL_DUPS = """
INSERT INTO rb_dups SELECT trade_id, wallet FROM stage_fills GROUP BY 1, 2 HAVING count(*) > 1"""
# As the careful path of a load finds conflicts, with this window's stored rows not counted as
# recorded (they are what is being replaced): against another window's row, or a later message
# with a key's first version in the journal and other content.
_SQL_CONFLICTS = f"""
INSERT INTO rb_conflicts
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet, 'recorded row', {REF_FIELDS}
FROM stage_fills s JOIN rb_elsewhere e ON e.trade_id = s.trade_id AND e.wallet = s.wallet
WHERE {REF_DISTINCT}
UNION ALL
SELECT s.seq, s.source_file, s.line_no, s.trade_id, s.wallet,
       sf.source_file || ':' || sf.line_no, {DUP_FIELDS}
FROM stage_fills s
JOIN (
    SELECT DISTINCT ON (s2.trade_id, s2.wallet) s2.*
    FROM stage_fills s2 JOIN rb_dups USING (trade_id, wallet)
    ORDER BY s2.trade_id, s2.wallet, s2.seq
) sf ON sf.trade_id = s.trade_id AND sf.wallet = s.wallet AND sf.seq <> s.seq
WHERE {DUP_DISTINCT}
  AND NOT EXISTS (
      SELECT 1 FROM rb_elsewhere e WHERE e.trade_id = s.trade_id AND e.wallet = s.wallet)"""
# Without a repeated key the DISTINCT ON sort is pure cost: {distinct} and {order} are empty.
_SQL_DERIVE = f"""
INSERT INTO rb_rows ({", ".join(INSERT_COLUMNS)})
SELECT {{distinct}} {CAND_VALUES}
FROM stage_fills s
WHERE NOT EXISTS (SELECT 1 FROM rb_conflicts c WHERE c.seq = s.seq)
  AND NOT EXISTS (
      SELECT 1 FROM rb_elsewhere e WHERE e.trade_id = s.trade_id AND e.wallet = s.wallet)
{{order}}"""
# Every row stored under the window, whatever month its fill_ts put it in (an older rule may
# have placed it outside the window's hour, where the per-window reads do not look).
_SQL_STORED = (
    f"INSERT INTO rb_stored SELECT * FROM {FILL_EVENTS} WHERE window_start = %(window_start)s"
)
_FIELDS = ", ".join(f"CASE WHEN n.{c} IS DISTINCT FROM o.{c} THEN '{c}' END" for c in DIFF_COLUMNS)
_NEW = ", ".join(f"n.{c}" for c in DIFF_COLUMNS)
_OLD = ", ".join(f"o.{c}" for c in DIFF_COLUMNS)
_SQL_DIFF = f"""
INSERT INTO rb_diff
SELECT CASE WHEN o.trade_id IS NULL THEN 'added' WHEN n.trade_id IS NULL THEN 'removed'
            ELSE 'changed' END,
       coalesce(n.trade_id, o.trade_id), coalesce(n.wallet, o.wallet),
       CASE WHEN n.trade_id IS NULL OR o.trade_id IS NULL THEN ''
            ELSE concat_ws(',', {_FIELDS}) END,
       n.fill_ts IS DISTINCT FROM o.fill_ts
FROM rb_rows n FULL JOIN rb_stored o ON o.trade_id = n.trade_id AND o.wallet = n.wallet
WHERE n.trade_id IS NULL OR o.trade_id IS NULL OR ({_NEW}) IS DISTINCT FROM ({_OLD})"""
_SQL_REJECTS_DIFF = f"""
SELECT count(*) FILTER (WHERE o.line_no IS NULL), count(*) FILTER (WHERE n.line_no IS NULL),
       count(*) FILTER (WHERE n.line_no IS NOT NULL AND o.line_no IS NOT NULL
                          AND (n.reason, n.raw_line) IS DISTINCT FROM (o.reason, o.raw_line))
FROM stage_rejects n
FULL JOIN (SELECT * FROM {FILL_REJECTS} WHERE window_start = %(window_start)s) o
  ON o.source_file = n.source_file AND o.line_no = n.line_no"""
_SQL_CONFLICTS_DIFF = f"""
SELECT count(*) FILTER (WHERE o.line_no IS NULL), count(*) FILTER (WHERE n.line_no IS NULL),
       count(*) FILTER (WHERE n.line_no IS NOT NULL AND o.line_no IS NOT NULL
                          AND (n.conflicts_with, n.differing_fields)
                              IS DISTINCT FROM (o.conflicts_with, o.differing_fields))
FROM rb_conflicts n
FULL JOIN (SELECT * FROM {FILL_CONFLICTS} WHERE window_start = %(window_start)s) o
  ON o.source_file = n.source_file AND o.line_no = n.line_no AND o.wallet = n.wallet"""
_SQL_SAMPLES = """
SELECT d.change, d.trade_id, d.wallet, d.fields, to_jsonb(o)::text, to_jsonb(n)::text
FROM (SELECT *, row_number() OVER (PARTITION BY change ORDER BY trade_id, wallet) AS i
      FROM rb_diff) d
LEFT JOIN rb_stored o ON o.trade_id = d.trade_id AND o.wallet = d.wallet
LEFT JOIN rb_rows n ON n.trade_id = d.trade_id AND n.wallet = d.wallet
WHERE d.i <= %(sample)s ORDER BY d.change, d.trade_id, d.wallet"""
_SQL_WINDOW_STATE = f"""
SELECT EXISTS (SELECT 1 FROM {FILL_RETIRED} WHERE window_start = %(window_start)s),
       (SELECT (summary->>'version')::int FROM {FILL_WINDOWS}
         WHERE window_start = %(window_start)s)"""
_SQL_NEW_REJECTS_BY_RULE = f"SELECT {REJECT_RULE}, count(*) FROM stage_rejects GROUP BY 1"
_SQL_BY_FIELD = """
SELECT f, count(*) FROM rb_diff, unnest(string_to_array(fields, ',')) f
WHERE change = 'changed' GROUP BY f ORDER BY f"""

# -- apply ------------------------------------------------------------------------------------
_SQL_KEEP_REVISIONS = f"""
INSERT INTO {FILL_REVISIONS}
    (rebuild_id, window_start, change, trade_id, wallet, old_row, changed_fields,
     version_from, version_to, reason)
SELECT %(rebuild_id)s, %(window_start)s, d.change, d.trade_id, d.wallet,
       CASE WHEN d.change = 'added' THEN NULL ELSE to_jsonb(o) END, d.fields,
       %(version_from)s, %(version_to)s, %(reason)s
FROM rb_diff d LEFT JOIN rb_stored o ON o.trade_id = d.trade_id AND o.wallet = d.wallet
ORDER BY d.trade_id, d.wallet"""
# A changed row that stays in its partition (same fill_ts) is updated in place: no key, no index
# entry changes (the indexed columns are the key, fill_ts and the window). One that moves (its
# fill_ts changed, maybe to another month's partition), and one removed, is deleted with its key;
# one added or moved is inserted with its key.
_SET = ", ".join(f"{c} = n.{c}" for c in DIFF_COLUMNS if c != "fill_ts")
_SQL_UPDATE_IN_PLACE = f"""
UPDATE {FILL_EVENTS} e SET {_SET}, recorded_at = n.recorded_at
FROM rb_diff d JOIN rb_rows n ON n.trade_id = d.trade_id AND n.wallet = d.wallet
WHERE d.change = 'changed' AND NOT d.moves
  AND e.window_start = %(window_start)s AND e.trade_id = d.trade_id AND e.wallet = d.wallet"""
_REPLACED = "(d.change = 'removed' OR (d.change = 'changed' AND d.moves))"
_INSERTED = "(d.change = 'added' OR (d.change = 'changed' AND d.moves))"
_SQL_REMOVE_SUPERSEDED = f"""
DELETE FROM {FILL_EVENTS} e USING rb_diff d
WHERE e.window_start = %(window_start)s AND e.trade_id = d.trade_id AND e.wallet = d.wallet
  AND {_REPLACED}"""
_SQL_REMOVE_KEYS = f"""
DELETE FROM {FILL_KEYS} k USING rb_diff d
WHERE k.trade_id = d.trade_id AND k.wallet = d.wallet AND {_REPLACED}"""
# A key registered without its row (deleted by hand) is taken over by the new version.
_SQL_ADD_KEYS = f"""
INSERT INTO {FILL_KEYS} (trade_id, wallet, fill_ts)
SELECT n.trade_id, n.wallet, n.fill_ts FROM rb_rows n
JOIN rb_diff d ON d.trade_id = n.trade_id AND d.wallet = n.wallet AND {_INSERTED}
ON CONFLICT (trade_id, wallet) DO UPDATE SET fill_ts = EXCLUDED.fill_ts"""
_SQL_ADD_ROWS = f"""
INSERT INTO {FILL_EVENTS} ({_ALL_COLUMNS})
SELECT {", ".join(f"n.{c}" for c in fill_events.columns.keys())} FROM rb_rows n
JOIN rb_diff d ON d.trade_id = n.trade_id AND d.wallet = n.wallet AND {_INSERTED}"""
#: The replace, in order (the undo replays a rebuild's revisions through the same statements).
_SQL_REPLACE = (
    _SQL_UPDATE_IN_PLACE,
    _SQL_REMOVE_SUPERSEDED,
    _SQL_REMOVE_KEYS,
    _SQL_ADD_KEYS,
    _SQL_ADD_ROWS,
)
_SQL_PREVIOUS = f"""
SELECT (SELECT to_jsonb(w) FROM {FILL_WINDOWS} w WHERE w.window_start = %(window_start)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.source_file, r.line_no), '[]')
          FROM {FILL_REJECTS} r WHERE r.window_start = %(window_start)s),
       (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.source_file, c.line_no, c.wallet), '[]')
          FROM {FILL_CONFLICTS} c WHERE c.window_start = %(window_start)s),
       (SELECT to_jsonb(t) FROM {FILL_RETIRED} t WHERE t.window_start = %(window_start)s)"""
_SQL_REJECTS_BY_RULE = f"""
SELECT {REJECT_RULE}, count(*) FROM {FILL_REJECTS}
WHERE window_start = %(window_start)s GROUP BY 1"""
_SQL_CLEAR_WINDOW = (
    f"DELETE FROM {FILL_REJECTS} WHERE window_start = %(window_start)s",
    f"DELETE FROM {FILL_CONFLICTS} WHERE window_start = %(window_start)s",
    f"DELETE FROM {FILL_RETIRED} WHERE window_start = %(window_start)s",
)
_SQL_NEW_REJECTS = f"""
INSERT INTO {FILL_REJECTS} (window_start, {", ".join(REJECT_FIELDS)})
SELECT %(window_start)s, {", ".join(REJECT_FIELDS)} FROM stage_rejects
ON CONFLICT DO NOTHING"""
_SQL_NEW_CONFLICTS = f"""
INSERT INTO {FILL_CONFLICTS}
    (window_start, source_file, line_no, wallet, trade_id, conflicts_with, differing_fields)
SELECT %(window_start)s, source_file, line_no, wallet, trade_id, conflicts_with, differing_fields
FROM rb_conflicts ON CONFLICT DO NOTHING"""
_SQL_SAVE_WINDOW = f"""
INSERT INTO {FILL_WINDOWS} (window_start, source, extent, summary)
VALUES (%(window_start)s, %(source)s, %(extent)s, %(summary)s)
ON CONFLICT (window_start) DO UPDATE SET source = EXCLUDED.source, extent = EXCLUDED.extent,
    summary = EXCLUDED.summary, recorded_at = now()"""
_SQL_AUDIT = f"""
INSERT INTO {FILL_REBUILDS}
    (rebuild_id, window_start, kind, undoes, reason, version_from, version_to, changes,
     previous_window, previous_rejects, previous_conflicts, previous_retired)
VALUES (%(rebuild_id)s, %(window_start)s, %(kind)s, %(undoes)s, %(reason)s, %(version_from)s,
        %(version_to)s, %(changes)s, %(previous_window)s, %(previous_rejects)s,
        %(previous_conflicts)s, %(previous_retired)s)"""
_SQL_OFFSET = f"""
INSERT INTO {COUNTER_OFFSETS} (metric, label, amount, cause) VALUES (%s, %s, %s, %s)"""

# -- undo -------------------------------------------------------------------------------------
_SQL_UNDO_STORED = f"""
INSERT INTO rb_stored SELECT e.* FROM {FILL_EVENTS} e
JOIN {FILL_REVISIONS} r ON r.trade_id = e.trade_id AND r.wallet = e.wallet
WHERE e.window_start = %(window_start)s
  AND r.rebuild_id = %(undoes)s AND r.window_start = %(window_start)s"""
# LATERAL: ``(f(x)).*`` would call the function once per column.
_SQL_UNDO_ROWS = f"""
INSERT INTO rb_rows
SELECT p.* FROM {FILL_REVISIONS} r
CROSS JOIN LATERAL jsonb_populate_record(NULL::{FILL_EVENTS}, r.old_row) p
WHERE r.rebuild_id = %(undoes)s AND r.window_start = %(window_start)s AND r.old_row IS NOT NULL"""
_SQL_RESTORE_REJECTS = f"""
INSERT INTO {FILL_REJECTS} SELECT * FROM jsonb_populate_recordset(NULL::{FILL_REJECTS}, %s)"""
_SQL_RESTORE_CONFLICTS = f"""
INSERT INTO {FILL_CONFLICTS} SELECT * FROM jsonb_populate_recordset(NULL::{FILL_CONFLICTS}, %s)"""
_SQL_RESTORE_RETIRED = f"""
INSERT INTO {FILL_RETIRED} SELECT * FROM jsonb_populate_record(NULL::{FILL_RETIRED}, %s)"""
_SQL_RESTORE_WINDOW = f"""
INSERT INTO {FILL_WINDOWS} SELECT * FROM jsonb_populate_record(NULL::{FILL_WINDOWS}, %s)
ON CONFLICT (window_start) DO UPDATE SET source = EXCLUDED.source, extent = EXCLUDED.extent,
    summary = EXCLUDED.summary, recorded_at = EXCLUDED.recorded_at"""


class RebuildError(Exception):
    """A rebuild or undo that cannot be done as asked: the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row the rebuild adds, removes or changes: for a change, each field old -> new."""

    change: str
    trade_id: int
    wallet: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.change != "changed":
            return f"{self.change} trade {self.trade_id} {self.wallet}"
        parts = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in self.fields.items())
        return f"changed trade {self.trade_id} {self.wallet}: {parts}"


@dataclass(frozen=True, slots=True)
class CountDiff:
    """Rejects or conflicts of a window: stored ones the derivation adds, drops, or changes."""

    added: int = 0
    removed: int = 0
    changed: int = 0

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True, slots=True)
class WindowDiff:
    """What re-deriving one window with the current rules changes, by key and field."""

    window: Window
    version_from: int | None
    version_to: int
    rows_derived: int
    rows_stored: int
    added: int
    removed: int
    changed: int
    changed_by_field: dict[str, int]
    samples: list[RowChange]
    rejects: CountDiff
    conflicts: CountDiff
    retired: bool
    digest_after: RowsDigest
    #: What the derivation holds besides its rows (a summary's counts).
    conflict_rows: int = 0
    conflict_messages: int = 0
    rejects_derived: int = 0

    @property
    def rows_changed(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def unchanged(self) -> bool:
        """Nothing to replace: the stored window is what the current rules give."""
        return not (self.rows_changed or self.rejects.any or self.conflicts.any or self.retired)

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.key,
            "version_from": self.version_from,
            "version_to": self.version_to,
            "rows_derived": self.rows_derived,
            "rows_stored": self.rows_stored,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "changed_by_field": self.changed_by_field,
            "samples": [s.describe() for s in self.samples],
            "rejects": {
                "added": self.rejects.added,
                "removed": self.rejects.removed,
                "changed": self.rejects.changed,
            },
            "conflicts": {
                "added": self.conflicts.added,
                "removed": self.conflicts.removed,
                "changed": self.conflicts.changed,
            },
            "retired": self.retired,
            "unchanged": self.unchanged,
            "digest_after": self.digest_after.as_dict(),
        }


#: Competition -> wallet -> (rank, pnl, volume).
Standings = dict[str, dict[str, tuple[int, str, str]]]


@dataclass(frozen=True, slots=True)
class StandingChange:
    """A wallet whose standing in a competition the rebuild changes (None: not ranked)."""

    competition_id: str
    wallet: str
    rank: tuple[int | None, int | None]
    pnl: tuple[str | None, str | None]
    volume: tuple[str | None, str | None]

    def describe(self) -> str:
        def pair(values: tuple) -> str:
            old, new = values
            return str(old) if old == new else f"{old} -> {new}"

        return (
            f"{self.competition_id} {self.wallet}: rank {pair(self.rank)}, pnl {pair(self.pnl)},"
            f" volume {pair(self.volume)}"
        )


def standing_changes(before: Standings, after: Standings) -> list[StandingChange]:
    """Every wallet whose rank, pnl or volume differs between two standings snapshots."""
    changes = []
    for competition_id in sorted(set(before) | set(after)):
        old_rows, new_rows = before.get(competition_id, {}), after.get(competition_id, {})
        for wallet in sorted(set(old_rows) | set(new_rows)):
            old, new = old_rows.get(wallet), new_rows.get(wallet)
            if old != new:
                changes.append(
                    StandingChange(
                        competition_id,
                        wallet,
                        (old and old[0], new and new[0]),
                        (old and old[1], new and new[1]),
                        (old and old[2], new and new[2]),
                    )
                )
    return changes


def _row_change(
    change: str, trade_id: int, wallet: str, fields: str, old: Any, new: Any
) -> RowChange:
    names = [f for f in fields.split(",") if f]
    before, after = exact_row(old), exact_row(new)
    return RowChange(
        change, trade_id, wallet, {name: (before.get(name), after.get(name)) for name in names}
    )


class WindowRebuild:
    """One window's re-derivation in an open transaction: stage, then :meth:`diff`, then
    (applied) :meth:`apply`."""

    def __init__(self, conn: psycopg.Connection, window: Window) -> None:
        self._conn = conn
        self.window = window
        self._params: dict[str, Any] = {
            "window_start": window.start,
            "window_end": window.end,
        }
        self._diff: WindowDiff | None = None

    def stage_rows(self, rows: Sequence[Row]) -> None:
        if rows:
            with self._conn.cursor() as cur, cur.copy(copy_sql("stage_fills", ROW_FIELDS)) as copy:
                for row in rows:
                    copy.write_row(row)

    def stage_rejects(self, rejects: Sequence[tuple]) -> None:
        if rejects:
            with (
                self._conn.cursor() as cur,
                cur.copy(copy_sql("stage_rejects", REJECT_FIELDS)) as copy,
            ):
                for reject in rejects:
                    copy.write_row(reject)

    def diff(self, version_to: int, sample: int = 5) -> WindowDiff:
        """Derive the window's rows from what was staged and compare them with the stored."""
        cur = self._conn.cursor()
        params = self._params
        cur.execute(_SQL_STORED, params)
        cur.execute("ANALYZE stage_fills")  # temporary tables: the planner knows them only so
        cur.execute(_SQL_ELSEWHERE, params)
        cur.execute(_SQL_DUPS)
        repeated = cur.rowcount > 0
        cur.execute(_SQL_CONFLICTS, params)
        cur.execute(
            _SQL_DERIVE.format(
                distinct="DISTINCT ON (s.trade_id, s.wallet)" if repeated else "",
                order="ORDER BY s.trade_id, s.wallet, s.seq" if repeated else "",
            ),
            params,
        )
        cur.execute("ANALYZE rb_rows")
        cur.execute("ANALYZE rb_stored")
        cur.execute(_SQL_DIFF)
        cur.execute("ANALYZE rb_diff")
        counts = dict(cur.execute("SELECT change, count(*) FROM rb_diff GROUP BY 1").fetchall())
        by_field = dict(cur.execute(_SQL_BY_FIELD).fetchall())
        samples = [
            _row_change(*row) for row in cur.execute(_SQL_SAMPLES, {"sample": sample}).fetchall()
        ]
        rejects = CountDiff(*cur.execute(_SQL_REJECTS_DIFF, params).fetchone())  # type: ignore[misc]
        conflicts = CountDiff(*cur.execute(_SQL_CONFLICTS_DIFF, params).fetchone())  # type: ignore[misc]
        derived, stored = cur.execute(
            "SELECT (SELECT count(*) FROM rb_rows), (SELECT count(*) FROM rb_stored)"
        ).fetchone()  # type: ignore[misc]
        retired, version_from = cur.execute(_SQL_WINDOW_STATE, params).fetchone()  # type: ignore[misc]
        conflict_rows, conflict_messages, rejects_derived = cur.execute(
            "SELECT (SELECT count(*) FROM rb_conflicts), (SELECT count(DISTINCT seq) FROM"
            " rb_conflicts), (SELECT count(*) FROM stage_rejects)"
        ).fetchone()  # type: ignore[misc]
        count, hash_sum = cur.execute(
            SQL_DIGEST.format(hash=STORED_HASH, source="rb_rows e")
        ).fetchone()  # type: ignore[misc]
        self._diff = WindowDiff(
            window=self.window,
            version_from=version_from,
            version_to=version_to,
            rows_derived=derived,
            rows_stored=stored,
            added=counts.get("added", 0),
            removed=counts.get("removed", 0),
            changed=counts.get("changed", 0),
            changed_by_field=by_field,
            samples=samples,
            rejects=rejects,
            conflicts=conflicts,
            retired=retired,
            digest_after=RowsDigest(count, int(hash_sum)),
            conflict_rows=conflict_rows,
            conflict_messages=conflict_messages,
            rejects_derived=rejects_derived,
        )
        return self._diff

    def keep_for_standings(self) -> None:
        """Add the derived rows to the range's, for the standings effect (dry run)."""
        self._conn.execute("INSERT INTO rb_range_rows SELECT * FROM rb_rows")
        self._conn.execute(
            "INSERT INTO rb_range_windows VALUES (%(window_start)s) ON CONFLICT DO NOTHING",
            self._params,
        )

    def apply(
        self,
        *,
        rebuild_id: str,
        reason: str,
        source: str,
        extent: dict[str, int],
        summary: dict,
    ) -> None:
        """Replace the window with its derivation (after :meth:`diff`), in this transaction."""
        diff = self._diff
        assert diff is not None, "diff() first"
        cur = self._conn.cursor()
        params = {
            **self._params,
            "rebuild_id": rebuild_id,
            "reason": reason,
            "version_from": diff.version_from,
            "version_to": diff.version_to,
        }
        counters_before, counters_after = self.counters(summary)
        previous = cur.execute(_SQL_PREVIOUS, params).fetchone()
        assert previous is not None
        if diff.rows_changed:
            for statement in (_SQL_KEEP_REVISIONS, *_SQL_REPLACE):
                cur.execute(statement, params)
        for statement in _SQL_CLEAR_WINDOW:
            cur.execute(statement, params)
        cur.execute(_SQL_NEW_REJECTS, params)
        cur.execute(_SQL_NEW_CONFLICTS, params)
        cur.execute(
            _SQL_SAVE_WINDOW,
            {**params, "source": source, "extent": Jsonb(extent), "summary": Jsonb(summary)},
        )
        _audit(cur, params, "rebuild", None, diff.as_dict(), previous)
        _offsets(cur, counters_before, counters_after, rebuild_id)

    def counters(self, summary_after: dict) -> tuple[dict, dict]:
        """What the window adds to the exporter's counters now, and after the replace."""
        stored = self._conn.execute(
            f"SELECT summary FROM {FILL_WINDOWS} WHERE window_start = %(window_start)s",
            self._params,
        ).fetchone()
        before = counters_of(
            stored and stored[0],
            dict(self._conn.execute(_SQL_REJECTS_BY_RULE, self._params).fetchall()),
        )
        after = counters_of(
            summary_after, dict(self._conn.execute(_SQL_NEW_REJECTS_BY_RULE).fetchall())
        )
        return before, after


def _audit(
    cur: psycopg.Cursor,
    params: dict[str, Any],
    kind: str,
    undoes: str | None,
    changes: dict[str, Any],
    previous: tuple,
) -> None:
    window, rejects, conflicts, retired = previous
    cur.execute(
        _SQL_AUDIT,
        {
            **params,
            "kind": kind,
            "undoes": undoes,
            "changes": Jsonb(changes),
            "previous_window": None if window is None else Jsonb(window),
            "previous_rejects": Jsonb(rejects),
            "previous_conflicts": Jsonb(conflicts),
            "previous_retired": None if retired is None else Jsonb(retired),
        },
    )


def _offsets(
    cur: psycopg.Cursor,
    before: dict[tuple[str, str], int],
    after: dict[tuple[str, str], int],
    cause: str,
) -> None:
    """What the replace took from the counters' tables, so the counters do not fall."""
    for (metric, label), amount in sorted(before.items()):
        lost = amount - after.get((metric, label), 0)
        if lost > 0:
            cur.execute(_SQL_OFFSET, (metric, label, lost, cause))


class RebuildSession:
    """A connection with the rebuild's temporary tables, for any number of windows in turn."""

    def __init__(
        self, conn: psycopg.Connection, ensure_month: Callable[[psycopg.Connection, Window], None]
    ) -> None:
        self._conn = conn
        self._ensure_month = ensure_month
        # Reads between the windows' transactions commit at once: each window's transaction is
        # then a transaction of its own, never a savepoint of an implicit one left open.
        conn.autocommit = True
        with conn.transaction():
            for statement in _SQL_SESSION:
                conn.execute(statement)

    @contextmanager
    def window(self, window: Window, *, apply: bool) -> Iterator[WindowRebuild]:
        """One window's transaction under its advisory lock: READ ONLY for a dry run, so that
        PostgreSQL refuses any write but to this session's temporary tables."""
        conn = self._conn
        if apply:  # the new rows' month (a dry run creates nothing)
            self._ensure_month(conn, window)
        with conn.transaction():
            if not apply:
                conn.execute("SET TRANSACTION READ ONLY")
            lock_window(conn, window)
            yield WindowRebuild(conn, window)

    def missing_privileges(self) -> list[str]:
        """The rights an apply needs that this connection's role lacks (``table: PRIVILEGE``)."""
        missing = []
        for table, privileges in OWNER_PRIVILEGES.items():
            for privilege in privileges:
                (granted,) = self._conn.execute(
                    "SELECT has_table_privilege(%s, %s)", (table, privilege)
                ).fetchone()  # type: ignore[misc]
                if not granted:
                    missing.append(f"{table}: {privilege}")
        return missing

    def standings(self, competitions: Sequence[str], *, preview: bool = False) -> Standings:
        """Each competition's standings by wallet (rank, pnl, volume): over the table as it is,
        or (``preview``) as the range's derived rows (:meth:`WindowRebuild.keep_for_standings`)
        would leave it. Computed, never stored: a dry run changes no standings."""
        fills = FILL_EVENTS
        if preview:
            fills = (
                f"(SELECT * FROM {FILL_EVENTS} e0 WHERE e0.window_start NOT IN"
                " (SELECT window_start FROM rb_range_windows)"
                " UNION ALL SELECT * FROM rb_range_rows)"
            )
        statement = standings_sql(fills)
        result: Standings = {}
        for competition_id in competitions:
            rows = self._conn.execute(statement, period_params(self._conn, competition_id))
            result[competition_id] = {
                wallet: (rank, str(pnl), str(volume)) for wallet, rank, pnl, volume, *_ in rows
            }
        return result

    def undo(self, undoes: str, undo_id: str, reason: str) -> list[dict[str, Any]]:
        """Restore every window the rebuild ``undoes`` replaced, each in one transaction, as it
        was before; refuses a window changed since (recorded again or rebuilt)."""
        conn = self._conn
        windows = [
            row[0]
            for row in conn.execute(
                f"SELECT window_start FROM {FILL_REBUILDS} WHERE rebuild_id = %s"
                " AND kind = 'rebuild' AND undone_by IS NULL ORDER BY window_start",
                (undoes,),
            ).fetchall()
        ]
        if not windows:
            known = conn.execute(
                f"SELECT undone_by FROM {FILL_REBUILDS} WHERE rebuild_id = %s LIMIT 1", (undoes,)
            ).fetchone()
            if known is None:
                raise RebuildError(
                    f"no rebuild {undoes!r} applied anything (unknown id, or a dry run: a dry"
                    " run writes nothing, so there is nothing to undo)"
                )
            raise RebuildError(f"rebuild {undoes!r} was undone already (by {known[0]})")
        done = []
        for start in windows:
            done.append(self._undo_window(Window(start), undoes, undo_id, reason))
        return done

    def _undo_window(
        self, window: Window, undoes: str, undo_id: str, reason: str
    ) -> dict[str, Any]:
        conn = self._conn
        with conn.transaction():
            lock_window(conn, window)
            cur = conn.cursor()
            params: dict[str, Any] = {
                "window_start": window.start,
                "undoes": undoes,
                "rebuild_id": undo_id,
                "reason": reason,
            }
            record = cur.execute(
                f"SELECT changes, previous_window, previous_rejects, previous_conflicts,"
                f" previous_retired, version_from, version_to FROM {FILL_REBUILDS}"
                " WHERE rebuild_id = %(undoes)s AND window_start = %(window_start)s FOR UPDATE",
                params,
            ).fetchone()
            assert record is not None
            changes, prev_window, prev_rejects, prev_conflicts, prev_retired, v_from, v_to = record
            count, hash_sum = cur.execute(
                SQL_DIGEST.format(
                    hash=STORED_HASH,
                    source=f"{FILL_EVENTS} e WHERE e.window_start = %(window_start)s",
                ),
                params,
            ).fetchone()  # type: ignore[misc]
            if RowsDigest(count, int(hash_sum)) != RowsDigest.from_dict(changes["digest_after"]):
                raise RebuildError(
                    f"window {window.key} changed since rebuild {undoes} (recorded or rebuilt"
                    " again): undoing it would lose that change; nothing of it was undone"
                )
            params.update(version_from=v_to, version_to=v_from or 0)
            previous = cur.execute(_SQL_PREVIOUS, params).fetchone()
            before = counters_of(
                previous[0] and previous[0]["summary"], self._rejects_by_rule(params)
            )
            # The rebuild's versions (its added and changed rows) out, the rows it superseded in.
            cur.execute(_SQL_UNDO_STORED, params)
            cur.execute(_SQL_UNDO_ROWS, params)
            for table in ("rb_stored", "rb_rows"):
                cur.execute(f"ANALYZE {table}")
            cur.execute(_SQL_DIFF)
            cur.execute("ANALYZE rb_diff")
            for statement in (_SQL_KEEP_REVISIONS, *_SQL_REPLACE):
                cur.execute(statement, params)
            for statement in _SQL_CLEAR_WINDOW:
                cur.execute(statement, params)
            cur.execute(_SQL_RESTORE_REJECTS, (Jsonb(prev_rejects),))
            cur.execute(_SQL_RESTORE_CONFLICTS, (Jsonb(prev_conflicts),))
            if prev_retired is not None:
                cur.execute(_SQL_RESTORE_RETIRED, (Jsonb(prev_retired),))
            if prev_window is None:
                cur.execute(
                    f"DELETE FROM {FILL_WINDOWS} WHERE window_start = %(window_start)s", params
                )
            else:
                cur.execute(_SQL_RESTORE_WINDOW, (Jsonb(prev_window),))
            restored = dict(
                cur.execute("SELECT change, count(*) FROM rb_diff GROUP BY 1").fetchall()
            )
            undo = {"window": window.key, "undoes": undoes, "rows": restored}
            count, hash_sum = cur.execute(
                SQL_DIGEST.format(
                    hash=STORED_HASH,
                    source=f"{FILL_EVENTS} e WHERE e.window_start = %(window_start)s",
                ),
                params,
            ).fetchone()  # type: ignore[misc]
            undo["digest_after"] = RowsDigest(count, int(hash_sum)).as_dict()
            _audit(cur, params, "undo", undoes, undo, previous)
            after = counters_of(
                prev_window and prev_window["summary"], self._rejects_by_rule(params)
            )
            _offsets(cur, before, after, undo_id)
            cur.execute(
                f"UPDATE {FILL_REBUILDS} SET undone_by = %(rebuild_id)s"
                " WHERE rebuild_id = %(undoes)s AND window_start = %(window_start)s",
                params,
            )
            return undo

    def _rejects_by_rule(self, params: dict[str, Any]) -> dict[str, int]:
        return dict(self._conn.execute(_SQL_REJECTS_BY_RULE, params).fetchall())
