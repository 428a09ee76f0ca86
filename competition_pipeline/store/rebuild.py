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
one transaction, and is itself audited. The statements are named in ``rebuild_sql.py``. No Dagster
here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from competition_pipeline.errors import TerminalError
from competition_pipeline.fills.rows import REJECT_FIELDS, ROW_FIELDS, Row
from competition_pipeline.fills.windows import Window
from competition_pipeline.store import rebuild_sql as sql
from competition_pipeline.store.compare import exact_row
from competition_pipeline.store.counters import counters_of
from competition_pipeline.store.digest import SQL_DIGEST, STORED_HASH, RowsDigest
from competition_pipeline.store.load import (
    copy_rows,
    lock_window,
)
from competition_pipeline.store.standings import period_params, standings_sql
from competition_pipeline.store.tables import (
    FILL_EVENTS,
    FILL_REBUILDS,
    FILL_TOTALS,
    FILL_WINDOWS,
)
from competition_pipeline.store.totals import SQL_RECOUNT_WINDOW, TOTAL_COLUMNS, aggregate


class RebuildError(TerminalError):
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
            copy_rows(self._conn, "stage_fills", ROW_FIELDS, rows)

    def stage_rejects(self, rejects: Sequence[tuple]) -> None:
        if rejects:
            copy_rows(self._conn, "stage_rejects", REJECT_FIELDS, rejects)

    def diff(self, version_to: int, sample: int = 5) -> WindowDiff:
        """Derive the window's rows from what was staged and compare them with the stored."""
        cur = self._conn.cursor()
        params = self._params
        stored = cur.execute(sql.SQL_STORED, params).rowcount
        cur.execute("ANALYZE stage_fills")  # temporary tables: the planner knows them only so
        cur.execute("ANALYZE rb_stored")
        cur.execute(sql.SQL_DUPS)
        repeated = cur.rowcount > 0
        conflicting_rows, derived = self._derive(cur, repeated)
        conflicting = sql.ELSEWHERE_CONFLICTING if conflicting_rows else ""
        if cur.execute(sql.SQL_ELSEWHERE.format(conflicting=conflicting), params).rowcount:
            for statement in sql.SQL_DERIVE_AGAIN:
                cur.execute(statement)
            _, derived = self._derive(cur, repeated)
        counts = dict(cur.execute("SELECT change, count(*) FROM rb_diff GROUP BY 1").fetchall())
        by_field = dict(cur.execute(sql.SQL_BY_FIELD).fetchall())
        samples = [
            _row_change(*row) for row in cur.execute(sql.SQL_SAMPLES, {"sample": sample}).fetchall()
        ]
        rejects = CountDiff(*cur.execute(sql.SQL_REJECTS_DIFF, params).fetchone())  # type: ignore[misc]
        conflicts = CountDiff(*cur.execute(sql.SQL_CONFLICTS_DIFF, params).fetchone())  # type: ignore[misc]
        retired, version_from = cur.execute(sql.SQL_WINDOW_STATE, params).fetchone()  # type: ignore[misc]
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

    def _derive(self, cur: psycopg.Cursor, repeated: bool) -> tuple[int, int]:
        """Conflicts, the rows the window should hold, their diff against the stored rows (with
        the keys in ``rb_elsewhere`` left to their windows): conflicting rows and derived rows."""
        conflicts = cur.execute(sql.SQL_CONFLICTS, self._params).rowcount
        derived = cur.execute(
            sql.SQL_DERIVE.format(
                distinct="DISTINCT ON (s.trade_id, s.wallet)" if repeated else "",
                order="ORDER BY s.trade_id, s.wallet, s.seq" if repeated else "",
            ),
            self._params,
        ).rowcount
        cur.execute("ANALYZE rb_rows")
        cur.execute(sql.SQL_DIFF)
        cur.execute("ANALYZE rb_diff")
        return conflicts, derived

    def keep_for_standings(self, *, edge: bool) -> None:
        """Keep the window's totals before (stored) and after (derived) for the standings effect
        (:meth:`RebuildSession.standing_effect`), read under the window's lock before any apply;
        and its rows before and after when it is a partial window at a competition's edge."""
        statements = [
            "INSERT INTO rb_range_windows VALUES (%(window_start)s) ON CONFLICT DO NOTHING",
            f"INSERT INTO rb_range_old_totals SELECT * FROM {FILL_TOTALS}"
            " WHERE window_start = %(window_start)s",
            f"INSERT INTO rb_range_totals ({', '.join(('window_start', 'wallet', *TOTAL_COLUMNS))})"
            f" {aggregate('rb_rows')}",
        ]
        if edge:
            statements += [
                "INSERT INTO rb_range_rows SELECT * FROM rb_rows",
                "INSERT INTO rb_range_old_rows SELECT * FROM rb_stored",
            ]
        for statement in statements:
            self._conn.execute(statement, self._params)

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
        previous = cur.execute(sql.SQL_PREVIOUS, params).fetchone()
        assert previous is not None
        counters_before = counters_of(_summary_of(previous), _rejects_by_rule(cur, params))
        counters_after = counters_of(
            summary, dict(cur.execute(sql.SQL_NEW_REJECTS_BY_RULE).fetchall())
        )
        if diff.rows_changed:
            for statement in sql.SQL_REPLACE:
                cur.execute(statement, params)
            for statement in SQL_RECOUNT_WINDOW:  # the window's totals are its new rows'
                cur.execute(statement, params)
        for statement in sql.SQL_CLEAR_WINDOW:
            cur.execute(statement, params)
        cur.execute(sql.SQL_NEW_REJECTS, params)
        cur.execute(sql.SQL_NEW_CONFLICTS, params)
        cur.execute(
            sql.SQL_SAVE_WINDOW,
            {**params, "source": source, "extent": Jsonb(extent), "summary": Jsonb(summary)},
        )
        _audit(cur, params, "rebuild", None, diff.as_dict(), previous)
        _offsets(cur, counters_before, counters_after, rebuild_id)


def _summary_of(previous: tuple) -> dict | None:
    """The window's stored summary, from :data:`~rebuild_sql.SQL_PREVIOUS`'s window row."""
    window = previous[0]
    return window and window["summary"]


def _rejects_by_rule(cur: psycopg.Cursor, params: dict[str, Any]) -> dict[str, int]:
    """The window's stored rejects by rule (a counter's labels)."""
    return dict(cur.execute(sql.SQL_REJECTS_BY_RULE, params).fetchall())


def _window_digest(cur: psycopg.Cursor, params: dict[str, Any]) -> RowsDigest:
    """The digest of every row stored under the window, whatever its partition."""
    count, hash_sum = cur.execute(sql.SQL_WINDOW_DIGEST, params).fetchone()  # type: ignore[misc]
    return RowsDigest(count, int(hash_sum))


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
        sql.SQL_AUDIT,
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
            cur.execute(sql.SQL_OFFSET, (metric, label, lost, cause))


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
            for statement in sql.SQL_SESSION:
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
        for table, privileges in sql.OWNER_PRIVILEGES.items():
            for privilege in privileges:
                (granted,) = self._conn.execute(
                    "SELECT has_table_privilege(%s, %s)", (table, privilege)
                ).fetchone()  # type: ignore[misc]
                if not granted:
                    missing.append(f"{table}: {privilege}")
        return missing

    def edge_windows(self, competitions: Sequence[str]) -> set[Window]:
        """The partial windows at the edges of ``competitions`` (their standings read rows)."""
        edges: set[Window] = set()
        for competition_id in competitions:
            params = period_params(self._conn, competition_id)
            edges.update(Window(start) for start in params["edges"])  # type: ignore[attr-defined]
        return edges

    def standing_effect(self, competitions: Sequence[str]) -> tuple[Standings, Standings]:
        """Each competition's standings by wallet (rank, pnl, volume) with the range's windows as
        they were and as the rebuild leaves (or, a dry run, would leave) them
        (:meth:`WindowRebuild.keep_for_standings`), everything else the same: both sides in one
        REPEATABLE READ transaction, one snapshot, so fills committed meanwhile (the follower's)
        count on both sides or on neither. Computed, never stored."""
        not_range = "window_start NOT IN (SELECT window_start FROM rb_range_windows)"

        def side(totals: str, rows: str) -> str:
            return standings_sql(
                f"(SELECT * FROM {FILL_TOTALS} WHERE {not_range} UNION ALL SELECT * FROM {totals})",
                f"(SELECT * FROM {FILL_EVENTS} WHERE {not_range} UNION ALL SELECT * FROM {rows})",
            )

        before: Standings = {}
        after: Standings = {}
        with self._conn.transaction():
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for result, statement in (
                (before, side("rb_range_old_totals", "rb_range_old_rows")),
                (after, side("rb_range_totals", "rb_range_rows")),
            ):
                for competition_id in competitions:
                    rows = self._conn.execute(statement, period_params(self._conn, competition_id))
                    result[competition_id] = {
                        wallet: (rank, str(pnl), str(volume))
                        for wallet, rank, pnl, volume, *_ in rows
                    }
        return before, after

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
            if _window_digest(cur, params) != RowsDigest.from_dict(changes["digest_after"]):
                raise RebuildError(
                    f"window {window.key} changed since rebuild {undoes} (recorded or rebuilt"
                    " again): undoing it would lose that change; nothing of it was undone"
                )
            params.update(version_from=v_to, version_to=v_from or 0)
            previous = cur.execute(sql.SQL_PREVIOUS, params).fetchone()
            before = counters_of(_summary_of(previous), _rejects_by_rule(cur, params))
            # The rebuild's versions (its added and changed rows) out, the rows it superseded in.
            cur.execute(sql.SQL_UNDO_KEYS, params)
            cur.execute("ANALYZE rb_keys")
            cur.execute(sql.SQL_UNDO_STORED, params)
            cur.execute(sql.SQL_UNDO_ROWS, params)
            for table in ("rb_stored", "rb_rows"):
                cur.execute(f"ANALYZE {table}")
            cur.execute(sql.SQL_DIFF)
            cur.execute("ANALYZE rb_diff")
            for statement in (*sql.SQL_REPLACE, *SQL_RECOUNT_WINDOW, *sql.SQL_CLEAR_WINDOW):
                cur.execute(statement, params)
            cur.execute(sql.SQL_RESTORE_REJECTS, (Jsonb(prev_rejects),))
            cur.execute(sql.SQL_RESTORE_CONFLICTS, (Jsonb(prev_conflicts),))
            if prev_retired is not None:
                cur.execute(sql.SQL_RESTORE_RETIRED, (Jsonb(prev_retired),))
            if prev_window is None:
                cur.execute(
                    f"DELETE FROM {FILL_WINDOWS} WHERE window_start = %(window_start)s", params
                )
            else:
                cur.execute(sql.SQL_RESTORE_WINDOW, (Jsonb(prev_window),))
            restored = dict(
                cur.execute("SELECT change, count(*) FROM rb_diff GROUP BY 1").fetchall()
            )
            undo = {"window": window.key, "undoes": undoes, "rows": restored}
            undo["digest_after"] = _window_digest(cur, params).as_dict()
            _audit(cur, params, "undo", undoes, undo, previous)
            after = counters_of(
                prev_window and prev_window["summary"], _rejects_by_rule(cur, params)
            )
            _offsets(cur, before, after, undo_id)
            cur.execute(
                f"UPDATE {FILL_REBUILDS} SET undone_by = %(rebuild_id)s"
                " WHERE rebuild_id = %(undoes)s AND window_start = %(window_start)s",
                params,
            )
            return undo
