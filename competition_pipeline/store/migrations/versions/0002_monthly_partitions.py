"""Monthly partitions of competition_fill_events on fill_ts; the key registry competition_fill_keys.

docs/operations.md, section 7.
A partitioned table can only enforce a unique key that contains the partition key, and the
pipeline's rule is one row per (trade_id, wallet) whatever the fill time. So the parent's key is
(trade_id, wallet, fill_ts) and competition_fill_keys, hash-partitioned on trade_id, keeps
(trade_id, wallet) unique across all months (store/load.py writes both in the same statement group).

The cutover never rewrites the recorded rows. A populated table becomes the partition
``competition_fill_events_hist`` for everything before the month after its newest fill: its indexes
are reused (or built here when the online preparation of section 7 was skipped), a validated CHECK
spares ATTACH its scan, and later months get their own partitions. An empty table (a new
database) is simply replaced. Months are created by ``competition_create_month``, a SECURITY
DEFINER function, so the pipeline's role creates a missing month without DDL rights of its own.

Revision ID: 0002
Revises: 0001
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY_PARTITIONS = 16

_PARENT = """
CREATE TABLE competition_fill_events_parted (
    trade_id bigint NOT NULL,
    wallet text NOT NULL,
    role text NOT NULL,
    side text NOT NULL,
    counterparty text NOT NULL,
    is_self_trade boolean NOT NULL,
    symbol text NOT NULL,
    price numeric NOT NULL,
    size numeric NOT NULL,
    notional numeric NOT NULL,
    fee numeric NOT NULL,
    realized_pnl numeric,
    builder_code_address text,
    builder_code_fee numeric,
    source_type text NOT NULL,
    taker_order_id bigint NOT NULL,
    maker_order_id bigint NOT NULL,
    underlying_notional numeric,
    fill_ts timestamptz NOT NULL,
    window_start timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fill_events_role CHECK (role IN ('taker', 'maker', 'self')),
    CONSTRAINT fill_events_side CHECK (side IN ('Buy', 'Sell')),
    CONSTRAINT competition_fill_events_parted_pkey PRIMARY KEY (trade_id, wallet, fill_ts)
) PARTITION BY RANGE (fill_ts)"""

# SECURITY DEFINER: runs as the tables' owner, so the recorder (no DDL rights) can create the month
# it is about to load. It can do nothing else: one partition of this table, month-aligned, named by
# the month. The advisory lock (the project's namespace 0x6370, key -2) serializes two loads that
# find the same month missing; the second gets duplicate_table and returns false.
_CREATE_MONTH = """
CREATE OR REPLACE FUNCTION competition_create_month(first_day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    name text := format('competition_fill_events_%s', to_char(first_day, 'YYYY_MM'));
    lo timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    history_end timestamptz;
BEGIN
    IF first_day IS NULL OR first_day <> date_trunc('month', first_day)::date THEN
        RAISE EXCEPTION '% is not the first day of a month', first_day;
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Months before the cutover live in the history partition (bound FROM (MINVALUE) TO (...)).
    SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']+)''\\)')::timestamptz
      INTO history_end
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'competition_fill_events'::regclass
       AND pg_get_expr(c.relpartbound, c.oid) LIKE '%MINVALUE%';
    IF history_end IS NOT NULL AND lo < history_end THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(25456, -2);
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF competition_fill_events'
                       ' FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    EXCEPTION WHEN duplicate_table THEN
        -- Created by a concurrent call we waited for (an advisory lock does not refresh this
        -- session's catalog cache, so a second to_regclass here could still miss it).
        RETURN false;
    END;
    -- Written for a few weeks (late fills, replays), then only read: vacuum it early and often.
    EXECUTE format('ALTER TABLE %I SET (autovacuum_vacuum_insert_scale_factor = 0.02,'
                   ' autovacuum_analyze_scale_factor = 0.02)', name);
    RETURN true;
END $$"""


def _months_from(start: dt.date, months: int) -> list[dt.date]:
    out, y, m = [], start.year, start.month
    for _ in range(months):
        out.append(dt.date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def upgrade() -> None:
    bind = op.get_bind()

    def x(statement: str, **params: object) -> sa.CursorResult:
        return bind.execute(sa.text(statement), params)

    # Who may use the old table may use the new one: its grants are copied to the parent (and the
    # same SELECT/INSERT to the key registry), so an upgrade in place needs no grants.sql re-run.
    grants = x(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee))"
        " END, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = 'competition_fill_events'::regclass AND a.grantee <> c.relowner"
    ).all()

    x(
        "CREATE TABLE IF NOT EXISTS competition_fill_keys (trade_id bigint NOT NULL,"
        " wallet text NOT NULL, fill_ts timestamptz NOT NULL, PRIMARY KEY (trade_id, wallet))"
        " PARTITION BY HASH (trade_id)"
    )
    for r in range(KEY_PARTITIONS):
        x(
            f"CREATE TABLE IF NOT EXISTS competition_fill_keys_h{r:02d} PARTITION OF"
            f" competition_fill_keys FOR VALUES WITH (MODULUS {KEY_PARTITIONS}, REMAINDER {r})"
        )
    x(_PARENT)

    populated = x("SELECT EXISTS (SELECT 1 FROM competition_fill_events)").scalar()
    cutover: dt.datetime | None = None
    if populated:
        # Every recorded key. After the online preparation (docs/examples/partitioning.sql),
        # only those of windows recorded since its mark: the rest are registered already.
        mark = x(
            "SELECT substring(obj_description('competition_fill_keys'::regclass, 'pg_class')"
            " FROM '^prefilled: windows recorded before (.+)$')::timestamptz"
        ).scalar()
        register = (
            "INSERT INTO competition_fill_keys (trade_id, wallet, fill_ts)"
            " SELECT trade_id, wallet, fill_ts FROM competition_fill_events"
        )
        if mark is not None:
            register += (
                " WHERE window_start IN (SELECT window_start FROM competition_fill_windows"
                " WHERE recorded_at >= :mark)"
            )
        x(register + " ON CONFLICT (trade_id, wallet) DO NOTHING", mark=mark)
        # The parent's indexes on the old table (no-ops when built CONCURRENTLY beforehand).
        x(
            "CREATE UNIQUE INDEX IF NOT EXISTS competition_fill_events_hist_pkey"
            " ON competition_fill_events (trade_id, wallet, fill_ts)"
        )
        x(
            "CREATE INDEX IF NOT EXISTS competition_fill_events_hist_wallet_fill_ts"
            " ON competition_fill_events (wallet, fill_ts)"
        )
        bound = x(
            "SELECT substring(pg_get_constraintdef(oid) FROM '''([^'']+)''')::timestamptz"
            " FROM pg_constraint WHERE conname = 'competition_fill_events_hist_bound'"
            " AND conrelid = 'competition_fill_events'::regclass"
        ).scalar()
        if bound is None:
            cutover = x(
                "SELECT (date_trunc('month', max(fill_ts) AT TIME ZONE 'UTC')"
                " + interval '1 month') AT TIME ZONE 'UTC' FROM competition_fill_events"
            ).scalar()
            # A timestamp computed just above, never outside input.
            x(
                "ALTER TABLE competition_fill_events ADD CONSTRAINT"
                f" competition_fill_events_hist_bound CHECK (fill_ts < '{cutover.isoformat()}')"
            )
        else:
            cutover = bound
        x(
            "ALTER TABLE competition_fill_events DROP CONSTRAINT competition_fill_events_pkey,"
            " ADD CONSTRAINT competition_fill_events_hist_pkey"
            " PRIMARY KEY USING INDEX competition_fill_events_hist_pkey"
        )
        x(
            "ALTER INDEX ix_competition_fill_events_window_start"
            " RENAME TO competition_fill_events_hist_window_start"
        )
        # (wallet, fill_ts) serves every fill_ts read the old index served.
        x("DROP INDEX IF EXISTS ix_competition_fill_events_fill_ts")
        x("ALTER TABLE competition_fill_events RENAME TO competition_fill_events_hist")
    else:
        x("DROP TABLE competition_fill_events")

    x("ALTER TABLE competition_fill_events_parted RENAME TO competition_fill_events")
    x(
        "ALTER TABLE competition_fill_events RENAME CONSTRAINT"
        " competition_fill_events_parted_pkey TO competition_fill_events_pkey"
    )
    x(
        "CREATE INDEX ix_competition_fill_events_window_start"
        " ON competition_fill_events (window_start)"
    )
    x(
        "CREATE INDEX ix_competition_fill_events_wallet_fill_ts"
        " ON competition_fill_events (wallet, fill_ts)"
    )
    if cutover is not None:
        x(
            "ALTER TABLE competition_fill_events ATTACH PARTITION competition_fill_events_hist"
            f" FOR VALUES FROM (MINVALUE) TO ('{cutover.isoformat()}')"
        )
    for grantee, privilege in grants:
        x(f"GRANT {privilege} ON competition_fill_events TO {grantee}")
        if privilege in ("SELECT", "INSERT"):
            x(f"GRANT {privilege} ON competition_fill_keys TO {grantee}")

    x(_CREATE_MONTH)
    # This month and the next; the pipeline and the months job create later ones.
    today = x("SELECT (now() AT TIME ZONE 'UTC')::date").scalar()
    for first_day in _months_from(today.replace(day=1), 2):
        x("SELECT competition_create_month(:d)", d=first_day)


def downgrade() -> None:
    raise NotImplementedError("0002 is one-way: restore the pg_dump taken before the upgrade")
