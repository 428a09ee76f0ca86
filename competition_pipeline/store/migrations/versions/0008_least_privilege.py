"""``competition_create_month`` is executable only by whom grants.sql names, not by PUBLIC.

PostgreSQL grants EXECUTE on a new function to PUBLIC. This one is SECURITY DEFINER (it runs as the
tables' owner), so any role that could connect, the read-only analyst included, could create
partitions for any month (issue 33: twelve for the year 2200). The recorder is granted EXECUTE by
docs/examples/grants.sql; the owner owns it. Run grants.sql again after this upgrade.

Revision ID: 0008_least_privilege
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_least_privilege"
down_revision = "0007_window_totals"
branch_labels = None
depends_on = None

_FUNCTION = "competition_create_month(date)"


def upgrade() -> None:
    op.get_bind().execute(sa.text(f"REVOKE EXECUTE ON FUNCTION {_FUNCTION} FROM PUBLIC"))


def downgrade() -> None:
    op.get_bind().execute(sa.text(f"GRANT EXECUTE ON FUNCTION {_FUNCTION} TO PUBLIC"))
