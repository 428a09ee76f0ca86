"""The reconciliation's read-only comparison: the journal's rows for a window against the stored.

The rows are staged as a load stages them (same table, same COPY) but never inserted: the
comparison runs in a transaction of its own, under the window's advisory lock, that is always
rolled back
(:meth:`~competition_pipeline.store.database.CompetitionStore.window_comparison`), so it sees the
table as the latest load left it and writes nothing. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from competition_pipeline.fills.rows import ROW_FIELDS, Row
from competition_pipeline.fills.windows import Window
from competition_pipeline.store.digest import STAGED_HASH, STORED_HASH
from competition_pipeline.store.load import CAND_VALUES, SQL_STAGE_FILLS, copy_rows
from competition_pipeline.store.tables import (
    FILL_CONFLICTS,
    FILL_EVENTS,
    WINDOW_ROWS,
    fill_events,
    window_params,
)

#: The columns a changed row is compared in (the key is the comparison itself, the window the
#: same, and ``recorded_at`` says when, not what).
DIFF_COLUMNS = [
    c
    for c in fill_events.columns.keys()
    if c not in ("trade_id", "wallet", "window_start", "recorded_at")
]


def exact_row(text: str | None) -> dict[str, Any]:
    """A row read as JSON text (``to_jsonb(row)::text``), its decimals kept exact as strings
    (0.380 stays 0.380, never a float)."""
    if text is None:
        return {}
    return {
        k: str(v) if isinstance(v, Decimal) else v
        for k, v in json.loads(text, parse_float=Decimal).items()
    }


def field_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each of :data:`DIFF_COLUMNS` whose value differs, old -> new (decimals by value)."""

    def same(a: Any, b: Any) -> bool:
        try:
            return a == b or Decimal(a) == Decimal(b)
        except (TypeError, ArithmeticError, ValueError):
            return False

    return {c: (old.get(c), new.get(c)) for c in DIFF_COLUMNS if not same(old.get(c), new.get(c))}


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
    #: For the changed sample: each row's differing fields, stored -> what the journal gives.
    changed_fields: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.unexpected == 0 and self.changed == 0


_SQL_RECONCILE = f"""
CREATE TEMP TABLE reconcile_diff ON COMMIT DROP AS
WITH expected AS (
    SELECT DISTINCT ON (s.trade_id, s.wallet) s.trade_id, s.wallet, {STAGED_HASH} AS h
    FROM stage_fills s
    WHERE NOT EXISTS (
        SELECT 1 FROM {FILL_CONFLICTS} c
        WHERE c.window_start = %(window_start)s
          AND c.source_file = s.source_file AND c.line_no = s.line_no)
    ORDER BY s.trade_id, s.wallet, s.seq
), stored AS (
    SELECT e.trade_id, e.wallet, {STORED_HASH} AS h
    FROM {FILL_EVENTS} e WHERE {WINDOW_ROWS}
)
SELECT CASE WHEN s.trade_id IS NULL THEN 'missing'
            WHEN x.trade_id IS NULL THEN 'unexpected'
            ELSE 'changed' END AS side,
       coalesce(x.trade_id, s.trade_id) AS trade_id, coalesce(x.wallet, s.wallet) AS wallet
FROM expected x FULL JOIN stored s ON s.trade_id = x.trade_id AND s.wallet = x.wallet
WHERE x.trade_id IS NULL OR s.trade_id IS NULL OR x.h <> s.h"""


# A changed row, stored and as the journal gives it (the window's expected row, in the stored
# layout), for naming the fields that differ.
_SQL_CHANGED_FIELDS = f"""
SELECT x.trade_id, x.wallet, to_jsonb(x)::text, to_jsonb(e)::text FROM (
    SELECT DISTINCT ON (s.trade_id, s.wallet) {CAND_VALUES}
    FROM stage_fills s
    JOIN reconcile_diff d ON d.side = 'changed' AND d.trade_id = s.trade_id AND d.wallet = s.wallet
    WHERE NOT EXISTS (
        SELECT 1 FROM {FILL_CONFLICTS} c
        WHERE c.window_start = %(window_start)s
          AND c.source_file = s.source_file AND c.line_no = s.line_no)
    ORDER BY s.trade_id, s.wallet, s.seq
) x
JOIN {FILL_EVENTS} e ON e.trade_id = x.trade_id AND e.wallet = x.wallet
 AND e.window_start = %(window_start)s
 AND e.fill_ts >= %(window_start)s AND e.fill_ts < %(window_end)s
ORDER BY x.trade_id, x.wallet LIMIT %(sample)s"""


class WindowComparison:
    """Staged rows of one window, compared with its stored rows by :meth:`reconcile`.

    Lives in an open transaction that its caller rolls back: the staging table is created in it
    and goes with it.
    """

    def __init__(self, conn: psycopg.Connection, window: Window) -> None:
        self._conn = conn
        self._params = window_params(window)
        conn.execute(SQL_STAGE_FILLS)

    def stage_rows(self, rows: Sequence[Row]) -> None:
        """COPY one batch of the journal's rows into staging (nothing is inserted)."""
        copy_rows(self._conn, "stage_fills", ROW_FIELDS, rows)

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
            f" (SELECT count(*) FROM {FILL_EVENTS} WHERE {WINDOW_ROWS})",
            params,
        )
        expected, stored = cur.fetchone()  # type: ignore[misc]
        changed_fields = []
        for trade_id, wallet, journal_row, stored_row in cur.execute(
            _SQL_CHANGED_FIELDS, {**params, "sample": sample}
        ):
            changes = field_changes(exact_row(stored_row), exact_row(journal_row))
            parts = ", ".join(f"{c} {old} -> {new}" for c, (old, new) in changes.items())
            changed_fields.append(f"trade {trade_id} {wallet}: {parts}")
        return Reconciliation(
            expected_rows=expected,
            stored_rows=stored,
            missing=counts.get("missing", 0),
            unexpected=counts.get("unexpected", 0),
            missing_sample=samples["missing"],
            unexpected_sample=samples["unexpected"],
            changed=counts.get("changed", 0),
            changed_sample=samples["changed"],
            changed_fields=changed_fields,
        )
