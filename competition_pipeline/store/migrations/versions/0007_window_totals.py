"""Per-window totals for the standings; the (wallet, fill_ts) index dropped.

``competition_fill_window_totals`` holds, per window and wallet, what the standings rank by
(trades, volume, fees, realized PnL and builder fees, self-trades apart), written by every
statement group that writes the window's rows, in the same transaction (store/totals.py). A
refresh then sums totals of whole windows and reads rows only for the (at most two) partial
windows at a competition's edges: its cost follows windows and wallets, not fills. The totals of
the windows recorded before are counted here from their rows (one read of the table).

``ix_competition_fill_events_wallet_fill_ts`` served only the old standings query (read by
wallet over the competition's period): nothing reads by wallet now, and every insert paid for it.
Dropping the parent's index drops its partitions' (the history partition's adopted one too).

Who may insert into ``competition_fill_events`` may add to the totals (SELECT, INSERT, UPDATE:
a load's upsert), who may only read it may read them: an upgrade in place needs no grants.sql
re-run.

Revision ID: 0007_window_totals
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_window_totals"
down_revision = "0006_live_hour_leases"
branch_labels = None
depends_on = None

# Frozen copies (a migration never imports the code that changes after it).
_TABLE = """
CREATE TABLE competition_fill_window_totals (
    window_start timestamptz NOT NULL,
    wallet text NOT NULL,
    trades bigint NOT NULL,
    volume numeric NOT NULL,
    fees numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    builder_fees numeric NOT NULL,
    self_trades bigint NOT NULL,
    PRIMARY KEY (window_start, wallet)
)"""
_NOT_SELF = "FILTER (WHERE NOT is_self_trade)"
_COUNT = f"""
INSERT INTO competition_fill_window_totals
    (window_start, wallet, trades, volume, fees, realized_pnl, builder_fees, self_trades)
SELECT window_start, wallet, count(*) {_NOT_SELF},
       coalesce(sum(price * size) {_NOT_SELF}, 0), coalesce(sum(fee) {_NOT_SELF}, 0),
       coalesce(sum(realized_pnl) {_NOT_SELF}, 0),
       coalesce(sum(builder_code_fee) {_NOT_SELF}, 0),
       count(*) FILTER (WHERE is_self_trade)
FROM competition_fill_events GROUP BY window_start, wallet"""
_COMMENTS = {
    "window_start": "Start (UTC) of the window whose stored rows these totals sum.",
    "wallet": "The wallet of the rows summed.",
    "trades": "Rows of the wallet in the window, self-trades excluded.",
    "volume": "Sum of price x size over those rows.",
    "fees": "Sum of fee over those rows (negative: rebates).",
    "realized_pnl": "Sum of realized_pnl over those rows (null counts 0).",
    "builder_fees": "Sum of builder_code_fee over those rows (null counts 0).",
    "self_trades": "The wallet's self-trade rows in the window (apart).",
}


def upgrade() -> None:
    bind = op.get_bind()

    def x(statement: str, **params: object) -> sa.CursorResult:
        return bind.execute(sa.text(statement), params)

    grants = x(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee))"
        " END, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = 'competition_fill_events'::regclass AND a.grantee <> c.relowner"
        " AND a.privilege_type IN ('SELECT', 'INSERT')"
    ).all()
    x(_TABLE)
    for column, comment in _COMMENTS.items():
        quoted = comment.replace("'", "''")  # constants of this file
        x(f"COMMENT ON COLUMN competition_fill_window_totals.{column} IS '{quoted}'")
    x(_COUNT)
    # Covering: a refresh reads a wallet's totals of a period from the index alone (an
    # index-only scan once vacuumed), not one heap page per window.
    x(
        "CREATE INDEX ix_competition_fill_window_totals_wallet"
        " ON competition_fill_window_totals (wallet, window_start)"
        " INCLUDE (trades, volume, fees, realized_pnl, builder_fees)"
    )
    for grantee, privilege in grants:
        extra = ", UPDATE" if privilege == "INSERT" else ""
        x(f"GRANT {privilege}{extra} ON competition_fill_window_totals TO {grantee}")
    x("DROP INDEX IF EXISTS ix_competition_fill_events_wallet_fill_ts")
    x("ANALYZE competition_fill_window_totals")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_competition_fill_events_wallet_fill_ts"
        " ON competition_fill_events (wallet, fill_ts)"
    )
    op.drop_table("competition_fill_window_totals")
