"""Per-window, per-wallet totals of what the standings rank by (``competition_fill_window_totals``).

A window's totals are the sums over its stored rows, kept by every statement group that writes
those rows, in the same transaction (so rows, committed offsets and totals always agree):

* a load (closed window, the follower's incremental rounds, a backfill, a late fill) adds the
  totals of the rows it actually inserted (the ``INSERT ... RETURNING`` of the load itself,
  :func:`add_inserted`, staged per batch and added once per wallet at the load's end): the cost
  follows the change, never the window's or the table's size;
* a rebuild's apply and undo count the window again from its rows (:data:`SQL_RECOUNT_WINDOW`):
  they read the whole window anyway;
* retention deletes a month's totals with its rows (:data:`SQL_DELETE_MONTH`).

Self-trades are kept apart (``self_trades``), never in the sums: the standings exclude them.
Conflicting messages insert nothing, so they add nothing. :data:`SQL_WINDOW_MISMATCHES` is the
check that a window's totals are its rows' (part of the reconciliation check). Every value is
a bound parameter; the SQL is built from this module's constants. No Dagster here.
"""

from __future__ import annotations

from competition_pipeline.store.tables import FILL_EVENTS, FILL_TOTALS

#: The totals' columns after the key, in order.
TOTAL_COLUMNS = ("trades", "volume", "fees", "realized_pnl", "builder_fees", "self_trades")
#: The columns of a fill row the totals are computed from (what an insert returns).
ROW_INPUTS = (
    "window_start",
    "wallet",
    "is_self_trade",
    "price",
    "size",
    "fee",
    "realized_pnl",
    "builder_code_fee",
)

_NOT_SELF = "FILTER (WHERE NOT {a}is_self_trade)"


def aggregate(source: str, alias: str = "") -> str:
    """SQL: ``(window_start, wallet, trades, volume, fees, realized_pnl, builder_fees,
    self_trades)`` summed over ``source`` (a relation with :data:`ROW_INPUTS`), by window and
    wallet. ``alias``: the relation's alias with its dot (``"e."``), when ``source`` has one."""
    a = alias
    f = _NOT_SELF.format(a=a)
    return (
        f"SELECT {a}window_start, {a}wallet, count(*) {f},"
        f" coalesce(sum({a}price * {a}size) {f}, 0), coalesce(sum({a}fee) {f}, 0),"
        f" coalesce(sum({a}realized_pnl) {f}, 0), coalesce(sum({a}builder_code_fee) {f}, 0),"
        f" count(*) FILTER (WHERE {a}is_self_trade)"
        f" FROM {source} GROUP BY {a}window_start, {a}wallet"
    )


_COLUMNS = ", ".join(("window_start", "wallet", *TOTAL_COLUMNS))
_ADD = ", ".join(f"{c} = t.{c} + EXCLUDED.{c}" for c in TOTAL_COLUMNS)


#: A load's staged totals (one row per batch and wallet, appended by :func:`add_inserted`'s
#: statements, emptied at commit): added to the window's at the load's end, one upsert per wallet
#: whatever the number of batches.
SQL_STAGE_TOTALS = (
    "CREATE TEMP TABLE stage_totals (window_start timestamptz, wallet text, trades bigint,"
    " volume numeric, fees numeric, realized_pnl numeric, builder_fees numeric,"
    " self_trades bigint) ON COMMIT DELETE ROWS"
)
_SUMS = ", ".join(f"sum({c})" for c in TOTAL_COLUMNS)
SQL_ADD_STAGED = (
    f"INSERT INTO {FILL_TOTALS} AS t ({_COLUMNS})"
    f" SELECT window_start, wallet, {_SUMS} FROM stage_totals GROUP BY window_start, wallet"
    f" ON CONFLICT (window_start, wallet) DO UPDATE SET {_ADD}"
)


def add_inserted(insert: str) -> str:
    """SQL: ``insert`` (an ``INSERT INTO competition_fill_events ...`` without RETURNING) run
    as a data-modifying CTE whose inserted rows' totals are staged in the same statement
    (``stage_totals``, added to the window's by :data:`SQL_ADD_STAGED` in the same transaction);
    the statement returns one row, the number of rows inserted."""
    return (
        f"WITH ins AS ({insert} RETURNING {', '.join(ROW_INPUTS)}),"
        f" tot AS (INSERT INTO stage_totals {aggregate('ins')})"
        " SELECT count(*) FROM ins"
    )


#: A window's totals counted again from its rows (a rebuild's apply and undo): every row stored
#: under the window, whatever month its fill_ts put it in (as the rebuild reads them).
SQL_RECOUNT_WINDOW = (
    f"DELETE FROM {FILL_TOTALS} WHERE window_start = %(window_start)s",
    f"INSERT INTO {FILL_TOTALS} ({_COLUMNS})"
    f" {aggregate(f'{FILL_EVENTS} WHERE window_start = %(window_start)s')}",
)

#: Retention: the totals of the windows of ``[%(lo)s, %(hi)s)``, deleted with their month.
SQL_DELETE_MONTH = (
    f"DELETE FROM {FILL_TOTALS} WHERE window_start >= %(lo)s AND window_start < %(hi)s"
)

_DIFFERS = " OR ".join(f"s.{c} IS DISTINCT FROM r.{c}" for c in TOTAL_COLUMNS)
_PAIRS = ", ".join(f"s.{c}, r.{c}" for c in TOTAL_COLUMNS)
#: The wallets whose stored totals for the window differ from its rows' (None: no stored totals
#: row, or no rows): ``wallet, (stored, rows) per TOTAL_COLUMNS``, by wallet.
SQL_WINDOW_MISMATCHES = f"""
WITH r ({_COLUMNS}) AS (
    {aggregate(f"{FILL_EVENTS} WHERE window_start = %(window_start)s")}
), s AS (
    SELECT * FROM {FILL_TOTALS} WHERE window_start = %(window_start)s
)
SELECT coalesce(s.wallet, r.wallet), {_PAIRS}
FROM s FULL JOIN r ON r.wallet = s.wallet
WHERE s.wallet IS NULL OR r.wallet IS NULL OR {_DIFFERS}
ORDER BY 1"""
