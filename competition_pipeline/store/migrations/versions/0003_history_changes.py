"""Changing recorded history: rebuilds with their superseded rows, retired windows, counter offsets.

* ``competition_fill_rebuilds``: one row per window a rebuild (or an undo) replaced, with what it
  replaced besides the rows (the window's row, its rejects and conflicts, whether it was retired),
  so an undo restores the window exactly; the audit of every history change.
* ``competition_fill_revisions``: every row a rebuild superseded (the old row whole), added or
  changed, with the window, the recording versions old -> new, the rebuild's id and reason.
* ``competition_fill_retired``: the windows retention took out. The follow rule never asks for
  them again, and the asset refuses them, until a rebuild of the window restores it.
* ``competition_fill_counter_offsets``: what retention and rebuilds removed from the tables the
  exporter's lifetime counters are summed over, so that no counter ever falls.

Who may read ``competition_fill_windows`` may read the new tables (its grants are copied), so an
upgrade in place needs no grants.sql re-run. Only the tables' owner writes them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = (
    """CREATE TABLE competition_fill_rebuilds (
    rebuild_id text NOT NULL,
    window_start timestamptz NOT NULL,
    kind text NOT NULL CHECK (kind IN ('rebuild', 'undo')),
    undoes text,
    reason text NOT NULL,
    version_from integer,
    version_to integer NOT NULL,
    changes jsonb NOT NULL,
    previous_window jsonb,
    previous_rejects jsonb NOT NULL,
    previous_conflicts jsonb NOT NULL,
    previous_retired jsonb,
    undone_by text,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rebuild_id, window_start)
)""",
    """CREATE TABLE competition_fill_revisions (
    revision_id bigserial PRIMARY KEY,
    rebuild_id text NOT NULL,
    window_start timestamptz NOT NULL,
    change text NOT NULL CHECK (change IN ('added', 'removed', 'changed')),
    trade_id bigint NOT NULL,
    wallet text NOT NULL,
    old_row jsonb,
    changed_fields text NOT NULL,
    version_from integer,
    version_to integer NOT NULL,
    reason text NOT NULL,
    revised_at timestamptz NOT NULL DEFAULT now()
)""",
    "CREATE INDEX ix_competition_fill_revisions_rebuild"
    " ON competition_fill_revisions (rebuild_id, window_start)",
    """CREATE TABLE competition_fill_retired (
    window_start timestamptz PRIMARY KEY,
    month_table text NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now()
)""",
    """CREATE TABLE competition_fill_counter_offsets (
    offset_id bigserial PRIMARY KEY,
    metric text NOT NULL,
    label text NOT NULL DEFAULT '',
    amount bigint NOT NULL CHECK (amount >= 0),
    cause text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)""",
)
_NEW = (
    "competition_fill_rebuilds",
    "competition_fill_revisions",
    "competition_fill_retired",
    "competition_fill_counter_offsets",
)


def upgrade() -> None:
    bind = op.get_bind()
    readers = bind.execute(
        sa.text(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'"
            " ELSE quote_ident(pg_get_userbyid(a.grantee)) END"
            " FROM pg_class c, aclexplode(c.relacl) a"
            " WHERE c.oid = 'competition_fill_windows'::regclass AND a.grantee <> c.relowner"
            " AND a.privilege_type = 'SELECT'"
        )
    ).scalars()
    for statement in _TABLES:
        bind.execute(sa.text(statement))
    for grantee in readers:
        bind.execute(sa.text(f"GRANT SELECT ON {', '.join(_NEW)} TO {grantee}"))


def downgrade() -> None:
    raise NotImplementedError("0003 is one-way: restore the pg_dump taken before the upgrade")
