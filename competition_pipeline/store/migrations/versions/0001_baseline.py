"""Baseline: the seven tables exactly as ``create_all`` made them up to release 76b7974.

A frozen copy, not the live metadata of store/tables.py: later revisions change those tables.
Created with ``checkfirst``, so a database made by the old ``create_all`` (all tables present) is
only stamped, and one from an even older release gets just its missing tables.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_tz = sa.TIMESTAMP(timezone=True)


def _tables() -> sa.MetaData:
    m = sa.MetaData()
    sa.Table(
        "competition_fill_events",
        m,
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
        sa.Column("fill_ts", _tz, nullable=False),
        sa.Column("window_start", _tz, nullable=False),
        sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('taker', 'maker', 'self')", name="fill_events_role"),
        sa.CheckConstraint("side IN ('Buy', 'Sell')", name="fill_events_side"),
        sa.Index("ix_competition_fill_events_window_start", "window_start"),
        sa.Index("ix_competition_fill_events_fill_ts", "fill_ts"),
    )
    sa.Table(
        "competition_fill_rejects",
        m,
        sa.Column("window_start", _tz, primary_key=True),
        sa.Column("source_file", sa.Text, primary_key=True),
        sa.Column("line_no", sa.BigInteger, primary_key=True),
        sa.Column("raw_line", sa.Text, nullable=False),
        sa.Column("raw_line_escaped", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
    )
    sa.Table(
        "competition_fill_conflicts",
        m,
        sa.Column("window_start", _tz, primary_key=True),
        sa.Column("source_file", sa.Text, primary_key=True),
        sa.Column("line_no", sa.BigInteger, primary_key=True),
        sa.Column("wallet", sa.Text, primary_key=True),
        sa.Column("trade_id", sa.BigInteger, nullable=False),
        sa.Column("conflicts_with", sa.Text, nullable=False),
        sa.Column("differing_fields", sa.Text, nullable=False),
        sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
    )
    sa.Table(
        "competition_fill_windows",
        m,
        sa.Column("window_start", _tz, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("extent", postgresql.JSONB, nullable=False),
        sa.Column("summary", postgresql.JSONB, nullable=False),
        sa.Column("recorded_at", _tz, nullable=False, server_default=sa.func.now()),
    )
    sa.Table(
        "competitions",
        m,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("start_ts", _tz, nullable=False),
        sa.Column("end_ts", _tz, nullable=False),
        sa.Column("primary_win_condition", sa.Text, nullable=False),
        sa.CheckConstraint("primary_win_condition IN ('pnl', 'volume')", name="competitions_win"),
        sa.CheckConstraint("start_ts < end_ts", name="competitions_period"),
    )

    def key() -> sa.Column:
        return sa.Column(
            "competition_id",
            sa.Text,
            sa.ForeignKey("competitions.id", ondelete="CASCADE"),
            primary_key=True,
        )

    sa.Table(
        "competition_participants",
        m,
        key(),
        sa.Column("wallet", sa.Text, primary_key=True),
        sa.Column("username", sa.Text),
        sa.CheckConstraint("wallet ~ '^0x[0-9a-f]{40}$'", name="participants_wallet"),
    )
    sa.Table(
        "competition_standings",
        m,
        key(),
        sa.Column("wallet", sa.Text, primary_key=True),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("pnl", sa.Numeric, nullable=False),
        sa.Column("volume", sa.Numeric, nullable=False),
        sa.Column("trades", sa.BigInteger, nullable=False),
        sa.Column("fees", sa.Numeric, nullable=False),
        sa.Column("medal", sa.SmallInteger),
        sa.Column("computed_at", _tz, nullable=False, server_default=sa.func.now()),
    )
    return m


def upgrade() -> None:
    _tables().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    _tables().drop_all(op.get_bind())
