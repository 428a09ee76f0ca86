"""The open hour's follower holds a lease: ``competition_fill_followers``, one row per hour.

A follower takes the hour's row when it starts (its run id, the generation bumped by one; a run
created before the holder's does not take it) and
every load it commits checks, under the row's lock in the load's own transaction, that the row
still names its run and generation; a follower that lost the hour (a newer one started, its host
was cut off and replaced) commits nothing more (docs/recording.md, "The open hour's follower").
Who may write ``competition_fill_windows`` (the recorder) may write the new table too: its
INSERT/UPDATE grants are copied, so an upgrade in place needs no grants.sql re-run; its readers
may read it.

Revision ID: 0006_live_hour_leases
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_live_hour_leases"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLE = """CREATE TABLE competition_fill_followers (
    window_start timestamptz PRIMARY KEY,
    run_id text,
    run_created_at timestamptz,
    generation bigint NOT NULL DEFAULT 0 CHECK (generation >= 0),
    host text,
    taken_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    released_why text
)"""


def upgrade() -> None:
    bind = op.get_bind()
    grants = bind.execute(
        sa.text(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'"
            " ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type"
            " FROM pg_class c, aclexplode(c.relacl) a"
            " WHERE c.oid = 'competition_fill_windows'::regclass AND a.grantee <> c.relowner"
            " AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE')"
        )
    ).all()
    bind.execute(sa.text(_TABLE))
    for grantee, privilege in grants:
        bind.execute(sa.text(f"GRANT {privilege} ON competition_fill_followers TO {grantee}"))


def downgrade() -> None:
    op.drop_table("competition_fill_followers")
