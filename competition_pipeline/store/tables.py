"""The competition tables: names, SQLAlchemy metadata of the head revision, the per-window filter.

``competition_fill_events`` is partitioned by month on ``fill_ts`` (docs/operations.md, section 7):
its key ``(trade_id, wallet, fill_ts)`` contains the partition key, as PostgreSQL requires, and the
key registry ``competition_fill_keys`` keeps ``(trade_id, wallet)`` unique across all months. Every
statement that inserts fills writes the registry first; per-window reads name the window's
``fill_ts`` range so the planner reads one partition.

The schema is managed by Alembic (:mod:`competition_pipeline.store.schema`, revisions in
``migrations/versions``, each a frozen copy); this metadata describes the head revision and is what
the SQL of :mod:`~competition_pipeline.store.load` and :mod:`~competition_pipeline.store.database`
is built from.
No Dagster here.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql

from competition_pipeline.fills.windows import Window

FILL_EVENTS = "competition_fill_events"
FILL_REJECTS = "competition_fill_rejects"
FILL_CONFLICTS = "competition_fill_conflicts"
FILL_WINDOWS = "competition_fill_windows"
FILL_KEYS = "competition_fill_keys"
FILL_REBUILDS = "competition_fill_rebuilds"
FILL_REVISIONS = "competition_fill_revisions"
FILL_RETIRED = "competition_fill_retired"
COUNTER_OFFSETS = "competition_fill_counter_offsets"
FILL_TOTALS = "competition_fill_window_totals"
FILL_FOLLOWERS = "competition_fill_followers"

metadata = sa.MetaData()
_tz = sa.TIMESTAMP(timezone=True)


def _when(name: str, comment: str) -> sa.Column:
    """A timestamp column set by PostgreSQL's ``now()``: the writing transaction's start."""
    return sa.Column(name, _tz, nullable=False, server_default=sa.func.now(), comment=comment)


fill_events = sa.Table(
    FILL_EVENTS,
    metadata,
    sa.Column(
        "trade_id",
        sa.BigInteger,
        primary_key=True,
        comment=(
            "The engine's trade id, unique per trade across the exchange's history; with wallet, "
            "the row's key."
        ),
    ),
    sa.Column(
        "wallet",
        sa.Text,
        primary_key=True,
        comment="The wallet this row is for (0x + 40 hex digits, lowercase).",
    ),
    sa.Column(
        "role",
        sa.Text,
        nullable=False,
        comment="taker, maker, or self (taker and maker wallet the same: the trade's one row).",
    ),
    sa.Column(
        "side",
        sa.Text,
        nullable=False,
        comment=(
            "This wallet's side, Buy or Sell: the taker's side for the taker, the opposite for the"
            " maker."
        ),
    ),
    sa.Column(
        "counterparty",
        sa.Text,
        nullable=False,
        comment="The trade's other wallet (the wallet itself for a self-trade).",
    ),
    sa.Column(
        "is_self_trade",
        sa.Boolean,
        nullable=False,
        comment="True when taker and maker wallet are the same; the standings exclude such rows.",
    ),
    sa.Column(
        "symbol",
        sa.Text,
        nullable=False,
        comment="The instrument: UNDERLYING-YYYYMMDD-STRIKE-C or -P (an option), UNDERLYING-PERP.",
    ),
    sa.Column(
        "price",
        sa.Numeric,
        nullable=False,
        comment="The trade's price, the engine's decimal exactly.",
    ),
    sa.Column(
        "size",
        sa.Numeric,
        nullable=False,
        comment="The trade's size, the engine's decimal exactly.",
    ),
    sa.Column(
        "notional",
        sa.Numeric,
        nullable=False,
        comment="price x size, computed exactly by PostgreSQL.",
    ),
    sa.Column(
        "fee",
        sa.Numeric,
        nullable=False,
        comment=(
            "This wallet's fee (accounting.taker_fee or maker_fee, negative = rebate; without "
            "accounting: fill.fee for the taker, 0 for the maker); a self-trade's both fees "
            "summed."
        ),
    ),
    sa.Column(
        "realized_pnl",
        sa.Numeric,
        comment=(
            "This wallet's realized PnL on the trade (only on position-reducing fills, else null);"
            " a self-trade's both legs summed."
        ),
    ),
    sa.Column(
        "builder_code_address",
        sa.Text,
        comment=(
            "The builder that routed the taker order (on the taker's or self row; null on the "
            "maker's or when none)."
        ),
    ),
    sa.Column(
        "builder_code_fee",
        sa.Numeric,
        comment=(
            "What the taker paid the builder (on the taker's or self row; null on the maker's or "
            "when none)."
        ),
    ),
    sa.Column(
        "source_type",
        sa.Text,
        nullable=False,
        comment=(
            "How the trade came about: orderbook, rfq, liquidation, or an unknown type's name as "
            "written."
        ),
    ),
    sa.Column("taker_order_id", sa.BigInteger, nullable=False, comment="The taker's order id."),
    sa.Column("maker_order_id", sa.BigInteger, nullable=False, comment="The maker's order id."),
    sa.Column(
        "underlying_notional",
        sa.Numeric,
        comment=(
            "The underlying notional in USD at fill time, as the engine reported it (null when "
            "absent)."
        ),
    ),
    # Part of the key: a partitioned table's unique key must contain the partition key.
    sa.Column(
        "fill_ts",
        _tz,
        primary_key=True,
        comment=(
            "The fill's event time: the engine's timestamp (milliseconds since the epoch) as a UTC"
            " instant; the table's month partitions are by this column."
        ),
    ),
    sa.Column(
        "window_start",
        _tz,
        nullable=False,
        comment=(
            "Start (UTC) of the hourly window the fill was recorded in: the asset's partition, the"
            " hour of fill_ts."
        ),
    ),
    _when(
        "recorded_at",
        (
            "When the transaction that recorded the row began (PostgreSQL now(): the transaction's "
            "start, not its commit; every row of one load has the same value)."
        ),
    ),
    sa.CheckConstraint("role IN ('taker', 'maker', 'self')", name="fill_events_role"),
    sa.CheckConstraint("side IN ('Buy', 'Sell')", name="fill_events_side"),
    sa.Index("ix_competition_fill_events_window_start", "window_start"),
    postgresql_partition_by="RANGE (fill_ts)",
)

# One row per (trade_id, wallet) ever recorded, with the first version's fill time: the global
# uniqueness the partitioned table cannot enforce, and the way to the one partition holding a key.
fill_keys = sa.Table(
    FILL_KEYS,
    metadata,
    sa.Column(
        "trade_id", sa.BigInteger, primary_key=True, comment="The trade id of a recorded row."
    ),
    sa.Column("wallet", sa.Text, primary_key=True, comment="The wallet of a recorded row."),
    sa.Column(
        "fill_ts",
        _tz,
        nullable=False,
        comment="The first recorded version's fill_ts: where (which month's partition) the row is.",
    ),
    postgresql_partition_by="HASH (trade_id)",
)


def recorded_row(key: str) -> str:
    """SQL: the recorded row of the key ``({key}.trade_id, {key}.wallet)``, through the registry,
    as a subquery: ``CROSS JOIN LATERAL {recorded_row("s")} e`` or ``NOT EXISTS
    {recorded_row("s")}`` (PostgreSQL drops the LIMIT inside EXISTS). One registry probe, then the
    row in the one partition its ``fill_ts`` names (run-time pruning); LIMIT 1 keeps the planner
    from a hash join that scans the whole, ever-growing table for every window."""
    return f"""(
    SELECT e0.* FROM {FILL_KEYS} k
    JOIN {FILL_EVENTS} e0
      ON e0.trade_id = k.trade_id AND e0.wallet = k.wallet AND e0.fill_ts = k.fill_ts
    WHERE k.trade_id = {key}.trade_id AND k.wallet = {key}.wallet
    LIMIT 1
)"""  # noqa: S608 (``key`` is an alias in the caller's SQL, never data)


fill_rejects = sa.Table(
    FILL_REJECTS,
    metadata,
    sa.Column(
        "window_start",
        _tz,
        primary_key=True,
        comment="Start (UTC) of the window whose journal held the line.",
    ),
    sa.Column(
        "source_file",
        sa.Text,
        primary_key=True,
        comment="The journal segment, relative to the journal root (or the stream's name).",
    ),
    sa.Column(
        "line_no",
        sa.BigInteger,
        primary_key=True,
        comment=(
            "The line's number in its segment, from 1 (the message's stream sequence for the "
            "stream)."
        ),
    ),
    sa.Column(
        "raw_line",
        sa.Text,
        nullable=False,
        comment="The line exactly as read (escaped when raw_line_escaped).",
    ),
    sa.Column(
        "raw_line_escaped",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment=(
            "True when raw_line had to be escaped (invalid UTF-8 or NUL): backslash doubled,"
            " \\xNN bytes."
        ),
    ),
    sa.Column(
        "reason",
        sa.Text,
        nullable=False,
        comment=(
            "Why the line is not a fill: the field and the rule it broke (contract, section 1)."
        ),
    ),
    _when(
        "recorded_at",
        "When the transaction that quarantined the line began (its start, not its commit).",
    ),
)

fill_conflicts = sa.Table(
    FILL_CONFLICTS,
    metadata,
    sa.Column(
        "window_start",
        _tz,
        primary_key=True,
        comment="Start (UTC) of the window whose journal held the conflicting message.",
    ),
    sa.Column(
        "source_file",
        sa.Text,
        primary_key=True,
        comment="The segment holding the conflicting message (or the stream's name).",
    ),
    sa.Column(
        "line_no",
        sa.BigInteger,
        primary_key=True,
        comment="Its line number in the segment (the stream sequence for the stream).",
    ),
    sa.Column("wallet", sa.Text, primary_key=True, comment="The wallet row that conflicts."),
    sa.Column(
        "trade_id",
        sa.BigInteger,
        nullable=False,
        comment="The trade id the message shares with the recorded row.",
    ),
    sa.Column(
        "conflicts_with",
        sa.Text,
        nullable=False,
        comment="What it conflicts with: the recorded row, or an earlier line of the same load.",
    ),
    sa.Column(
        "differing_fields",
        sa.Text,
        nullable=False,
        comment="The fields whose values differ from the first version's (which stays recorded).",
    ),
    _when(
        "recorded_at",
        "When the transaction that reported the conflict began (its start, not its commit).",
    ),
)

# One row per window: what its latest load read (the extent, so that checks re-read exactly that
# data even after the journal has grown) and counted. Written in the load's own transaction.
fill_windows = sa.Table(
    FILL_WINDOWS,
    metadata,
    sa.Column(
        "window_start",
        _tz,
        primary_key=True,
        comment="Start (UTC) of the hourly window: one row per window ever recorded.",
    ),
    sa.Column(
        "source",
        sa.Text,
        nullable=False,
        comment="journal or stream: where the window was recorded from.",
    ),
    sa.Column(
        "extent",
        sa.dialects.postgresql.JSONB,
        nullable=False,
        comment=(
            "What the latest load covered: each segment's committed byte offset (or the stream "
            "position), so a later load continues there and the checks re-read exactly that data."
        ),
    ),
    sa.Column(
        "summary",
        sa.dialects.postgresql.JSONB,
        nullable=False,
        comment=(
            "The window's totals over its loads, the read positions and what it held at commit "
            "(rows, digest, recording version)."
        ),
    ),
    _when(
        "recorded_at",
        "When the transaction of the window's latest load began (its start, not its commit).",
    ),
)

# Changing recorded history (store/rebuild.py, store/months.py; migration 0003): written only by
# the tables' owner, never by the recorder.
fill_rebuilds = sa.Table(
    FILL_REBUILDS,
    metadata,
    sa.Column(
        "rebuild_id",
        sa.Text,
        primary_key=True,
        comment="The rebuild's (or undo's) id: its Dagster run id, or the id the CLI printed.",
    ),
    sa.Column(
        "window_start", _tz, primary_key=True, comment="Start (UTC) of the window it replaced."
    ),
    sa.Column(
        "kind",
        sa.Text,
        nullable=False,
        comment=(
            "rebuild (rows re-derived from the journal with the current rules) or undo (a "
            "rebuild's rows restored)."
        ),
    ),
    sa.Column("undoes", sa.Text, comment="For an undo: the rebuild_id it reverted."),
    sa.Column(
        "reason", sa.Text, nullable=False, comment="Why, as the operator gave it (--reason)."
    ),
    sa.Column(
        "version_from",
        sa.Integer,
        comment="The recording version the window held before (null: unknown, an older release).",
    ),
    sa.Column(
        "version_to",
        sa.Integer,
        nullable=False,
        comment="The recording version the window holds after.",
    ),
    sa.Column(
        "changes",
        sa.dialects.postgresql.JSONB,
        nullable=False,
        comment=(
            "What changed: rows added, removed and changed (by field), rejects and conflicts, the "
            "digest after."
        ),
    ),
    sa.Column(
        "previous_window",
        sa.dialects.postgresql.JSONB,
        comment="The window's competition_fill_windows row before (null: never recorded).",
    ),
    sa.Column(
        "previous_rejects",
        sa.dialects.postgresql.JSONB,
        nullable=False,
        comment="The window's rejects before, whole (restored by an undo).",
    ),
    sa.Column(
        "previous_conflicts",
        sa.dialects.postgresql.JSONB,
        nullable=False,
        comment="The window's conflicts before, whole (restored by an undo).",
    ),
    sa.Column(
        "previous_retired",
        sa.dialects.postgresql.JSONB,
        comment=(
            "The window's competition_fill_retired row before, if it was retired (a rebuild "
            "restores a retired window)."
        ),
    ),
    sa.Column("undone_by", sa.Text, comment="The undo that reverted this rebuild, once one has."),
    _when("applied_at", "When the replacing transaction began."),
)

#: The superseded row's columns in competition_fill_revisions, typed (migration 0004): every
#: column of competition_fill_events but the key and the window (the revision's own), prefixed.
#: A migration that adds a column to competition_fill_events adds its old_ column there too.
OLD_ROW_COLUMNS = {
    c: f"old_{c}"
    for c in fill_events.columns.keys()
    if c not in ("trade_id", "wallet", "window_start")
}

fill_revisions = sa.Table(
    FILL_REVISIONS,
    metadata,
    sa.Column(
        "revision_id",
        sa.BigInteger,
        primary_key=True,
        autoincrement=True,
        comment="Order of the revisions.",
    ),
    sa.Column(
        "rebuild_id",
        sa.Text,
        nullable=False,
        comment="The rebuild (or undo) that superseded the row.",
    ),
    sa.Column(
        "window_start", _tz, nullable=False, comment="Start (UTC) of the window the row belongs to."
    ),
    sa.Column(
        "change",
        sa.Text,
        nullable=False,
        comment="added (no old row), removed (the old row no longer derives) or changed.",
    ),
    sa.Column("trade_id", sa.BigInteger, nullable=False, comment="The row's trade id."),
    sa.Column("wallet", sa.Text, nullable=False, comment="The row's wallet."),
    sa.Column(
        "changed_fields",
        sa.Text,
        nullable=False,
        comment="The columns whose values changed, comma-separated (empty unless changed).",
    ),
    sa.Column(
        "version_from", sa.Integer, comment="The recording version of the superseded row's window."
    ),
    sa.Column(
        "version_to", sa.Integer, nullable=False, comment="The recording version after the change."
    ),
    sa.Column("reason", sa.Text, nullable=False, comment="The rebuild's reason."),
    _when("revised_at", "When the replacing transaction began."),
    *(
        sa.Column(
            OLD_ROW_COLUMNS[c.name],
            c.type,
            comment=f"The superseded row's {c.name} (null for an added row).",
        )
        for c in fill_events.columns
        if c.name in OLD_ROW_COLUMNS
    ),
    sa.Index("ix_competition_fill_revisions_rebuild", "rebuild_id", "window_start"),
)

fill_retired = sa.Table(
    FILL_RETIRED,
    metadata,
    sa.Column(
        "window_start",
        _tz,
        primary_key=True,
        comment=(
            "Start (UTC) of a window retention took out (its rows dropped, archived if configured)."
        ),
    ),
    sa.Column(
        "month_table", sa.Text, nullable=False, comment="The month partition it was dropped with."
    ),
    _when("retired_at", "When the retention transaction began."),
)

#: The open hour's follower lease (migration 0006, recording/live_hour.py): which run may load the
#: hour, fenced by the generation every load of that run checks in its own transaction.
fill_followers = sa.Table(
    FILL_FOLLOWERS,
    metadata,
    sa.Column("window_start", _tz, primary_key=True, comment="Start (UTC) of the followed hour."),
    sa.Column("run_id", sa.Text, comment="The run that holds the hour; null once handed back."),
    sa.Column(
        "run_created_at",
        _tz,
        comment="When the holding run was created: an older run never takes the hour from it.",
    ),
    sa.Column(
        "generation",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="Bumped at each takeover: a load commits only under the generation it took.",
    ),
    sa.Column("host", sa.Text, comment="The host the holding run executes on."),
    _when("taken_at", "When the holding run took the hour."),
    _when("heartbeat_at", "The holding run's latest commit (or its takeover)."),
    sa.Column("released_at", _tz, comment="When the run handed the hour back (null while held)."),
    sa.Column("released_why", sa.Text, comment="Why it was handed back (hour over, a stop)."),
)

counter_offsets = sa.Table(
    COUNTER_OFFSETS,
    metadata,
    sa.Column(
        "offset_id",
        sa.BigInteger,
        primary_key=True,
        autoincrement=True,
        comment="Order of the offsets.",
    ),
    sa.Column(
        "metric",
        sa.Text,
        nullable=False,
        comment="The counter (fills, rows, conflicts, rejects) whose tables lost the amount.",
    ),
    sa.Column(
        "label",
        sa.Text,
        nullable=False,
        server_default="",
        comment="The counter's label value (the reject rule for rejects), or empty.",
    ),
    sa.Column(
        "amount",
        sa.BigInteger,
        nullable=False,
        comment="What retention or a rebuild removed from the tables the counter is summed over.",
    ),
    sa.Column(
        "cause",
        sa.Text,
        nullable=False,
        comment="retention of a month, or the rebuild (or undo) id.",
    ),
    _when("recorded_at", "When the removing transaction began."),
)


# What the standings rank by, per window and wallet (store/totals.py; migration 0007): written in
# the transaction that writes the window's rows, so rows, offsets and totals always agree.
def _total(name: str, type_: sa.types.TypeEngine, comment: str) -> sa.Column:
    return sa.Column(name, type_, nullable=False, comment=comment)


fill_window_totals = sa.Table(
    FILL_TOTALS,
    metadata,
    sa.Column(
        "window_start",
        _tz,
        primary_key=True,
        comment="Start (UTC) of the window whose stored rows these totals sum.",
    ),
    sa.Column("wallet", sa.Text, primary_key=True, comment="The wallet of the rows summed."),
    _total("trades", sa.BigInteger, "Rows of the wallet in the window, self-trades excluded."),
    _total("volume", sa.Numeric, "Sum of price x size over those rows."),
    _total("fees", sa.Numeric, "Sum of fee over those rows (negative: rebates)."),
    _total("realized_pnl", sa.Numeric, "Sum of realized_pnl over those rows (null counts 0)."),
    _total("builder_fees", sa.Numeric, "Sum of builder_code_fee over those rows (null counts 0)."),
    _total("self_trades", sa.BigInteger, "The wallet's self-trade rows in the window (apart)."),
    sa.Index(
        "ix_competition_fill_window_totals_wallet",
        "wallet",
        "window_start",
        postgresql_include=["trades", "volume", "fees", "realized_pnl", "builder_fees"],
    ),
)


# Competitions, their registered wallets and their standings (see standings.py).
competitions = sa.Table(
    "competitions",
    metadata,
    sa.Column(
        "id", sa.Text, primary_key=True, comment="The competition's id (letters, digits, _ . -)."
    ),
    sa.Column("name", sa.Text, nullable=False, comment="Its display name."),
    sa.Column(
        "start_ts",
        _tz,
        nullable=False,
        comment="First instant of the competition (inclusive): fills from here count.",
    ),
    sa.Column("end_ts", _tz, nullable=False, comment="End of the competition (exclusive)."),
    sa.Column(
        "primary_win_condition",
        sa.Text,
        nullable=False,
        comment="What ranks wallets first: pnl or volume.",
    ),
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
        comment="The competition (its rows are removed with it).",
    )


competition_participants = sa.Table(
    "competition_participants",
    metadata,
    _competition_key(),
    sa.Column(
        "wallet",
        sa.Text,
        primary_key=True,
        comment="A registered wallet (0x + 40 hex digits, lowercase).",
    ),
    sa.Column("username", sa.Text, comment="Its display name, if any."),
    sa.CheckConstraint("wallet ~ '^0x[0-9a-f]{40}$'", name="participants_wallet"),
)

competition_standings = sa.Table(
    "competition_standings",
    metadata,
    _competition_key(),
    sa.Column("wallet", sa.Text, primary_key=True, comment="A registered wallet."),
    sa.Column(
        "rank",
        sa.Integer,
        nullable=False,
        comment=(
            "1.. by the primary win condition descending, ties by the other metric, then wallet."
        ),
    ),
    sa.Column(
        "pnl",
        sa.Numeric,
        nullable=False,
        comment=(
            "Realized PnL minus fees minus builder fees over the competition's fills, self-trades "
            "excluded."
        ),
    ),
    sa.Column(
        "volume",
        sa.Numeric,
        nullable=False,
        comment=(
            "Sum of notional (price x size) over the competition's fills, self-trades excluded."
        ),
    ),
    sa.Column(
        "trades", sa.BigInteger, nullable=False, comment="Number of the wallet's rows counted."
    ),
    sa.Column("fees", sa.Numeric, nullable=False, comment="Sum of the wallet's fees counted."),
    sa.Column("medal", sa.SmallInteger, comment="1, 2 or 3 for the top three ranks, else null."),
    _when(
        "computed_at",
        (
            "When the transaction that computed these standings began: every fill committed"
            " before it is counted."
        ),
    ),
    sa.Column(
        "through_fill_ts",
        _tz,
        comment=(
            "Fill time of the newest fill of the competition's period that the computation saw (up"
            " to which fill the standings are); null when none was recorded yet."
        ),
    ),
    sa.Column(
        "through_trade_id",
        sa.BigInteger,
        comment="The trade_id of that newest fill (the largest, when several share its time).",
    ),
)

# Every per-window read of the fills names the window's fill_ts range too (a recorded fill's
# fill_ts is always inside its window): the planner then reads one month's partition.
WINDOW_ROWS = (
    "window_start = %(window_start)s AND fill_ts >= %(window_start)s AND fill_ts < %(window_end)s"
)


def window_params(window: Window) -> dict[str, dt.datetime]:
    """The parameters :data:`WINDOW_ROWS` (and every per-window statement) names."""
    return {"window_start": window.start, "window_end": window.end}
