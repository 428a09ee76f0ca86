"""Standings say up to which fill they are: ``through_fill_ts`` and ``through_trade_id``.

A live competition's standings are refreshed every few seconds while the open hour is followed
(docs/recording.md); each computation stores, with its rows, the newest fill of the period it saw,
so ``competition-pipeline standings`` can say when they were computed and up to which fill. Two
nullable columns: no rewrite of the table, no grant to change (INSERT covers them).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "ALTER TABLE competition_standings ADD COLUMN through_fill_ts timestamptz,"
            " ADD COLUMN through_trade_id bigint"
        )
    )


def downgrade() -> None:
    op.drop_column("competition_standings", "through_trade_id")
    op.drop_column("competition_standings", "through_fill_ts")
