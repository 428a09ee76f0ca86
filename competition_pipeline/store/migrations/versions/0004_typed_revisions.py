"""Typed revisions: a superseded row's columns in competition_fill_revisions, not one jsonb.

A rebuild keeps every row it supersedes; an undo reads them back. Built as jsonb
(``to_jsonb(row)``, then ``jsonb_populate_record``), a million superseded rows cost a rebuild most
of its time (figure r, docs/performance.md). Each column of ``competition_fill_events`` but the
key and the window (the revision's own ``trade_id``, ``wallet``, ``window_start``) becomes an
``old_<column>`` column of the same type, null for an added row. Revisions kept before are
converted in place. Grants are the table's, unchanged.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# competition_fill_events' columns at this revision, in order, but trade_id, wallet, window_start.
_OLD_COLUMNS = (
    ("role", "text"),
    ("side", "text"),
    ("counterparty", "text"),
    ("is_self_trade", "boolean"),
    ("symbol", "text"),
    ("price", "numeric"),
    ("size", "numeric"),
    ("notional", "numeric"),
    ("fee", "numeric"),
    ("realized_pnl", "numeric"),
    ("builder_code_address", "text"),
    ("builder_code_fee", "numeric"),
    ("source_type", "text"),
    ("taker_order_id", "bigint"),
    ("maker_order_id", "bigint"),
    ("underlying_notional", "numeric"),
    ("fill_ts", "timestamptz"),
    ("recorded_at", "timestamptz"),
)


def upgrade() -> None:
    bind = op.get_bind()
    added = ", ".join(f"ADD COLUMN old_{name} {kind}" for name, kind in _OLD_COLUMNS)
    bind.execute(sa.text(f"ALTER TABLE competition_fill_revisions {added}"))
    targets = ", ".join(f"old_{name}" for name, _ in _OLD_COLUMNS)
    values = ", ".join(f"p.{name}" for name, _ in _OLD_COLUMNS)
    bind.execute(
        sa.text(
            f"UPDATE competition_fill_revisions r SET ({targets}) = (SELECT {values} FROM"
            " jsonb_populate_record(NULL::competition_fill_events, r.old_row) p)"
            " WHERE r.old_row IS NOT NULL"
        )
    )
    bind.execute(sa.text("ALTER TABLE competition_fill_revisions DROP COLUMN old_row"))


def downgrade() -> None:
    raise NotImplementedError("0004 is one-way: restore the pg_dump taken before the upgrade")
