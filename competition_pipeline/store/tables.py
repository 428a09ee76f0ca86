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

# Every per-window read of the fills names the window's fill_ts range too (a recorded fill's
# fill_ts is always inside its window): the planner then reads one month's partition.
WINDOW_ROWS = (
    "window_start = %(window_start)s AND fill_ts >= %(window_start)s AND fill_ts < %(window_end)s"
)


def window_params(window: Window) -> dict[str, dt.datetime]:
    """The parameters :data:`WINDOW_ROWS` (and every per-window statement) names."""
    return {"window_start": window.start, "window_end": window.end}
