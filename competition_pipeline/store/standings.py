"""Competitions and their standings, computed in PostgreSQL from the recorded fills.

For each competition and registered wallet, over the rows whose fill time is in
``[start_ts, end_ts)``, self-trades excluded (summed from the per-window totals for the whole
windows of the period, from the rows for the partial windows at its edges: a refresh costs what
the period's windows and wallets do, not its fills):

* ``pnl`` = sum of realized PnL (null counts 0) - sum of fees - sum of builder fees (a negative
  fee is a rebate, so it adds);
* ``volume`` = sum of price x size; ``trades`` = number of rows; ``fees`` = sum of fees;
* ``rank`` 1.. by the primary win condition descending, ties broken by the other metric
  descending, then wallet ascending; ``medal`` 1, 2, 3 for the top three.

A registered wallet with no fills is ranked with zeros. A competition's standings are replaced in
one transaction, so readers see the old table or the new one, never a mix. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal

import psycopg

from competition_pipeline.errors import TerminalError
from competition_pipeline.fills.contract import WALLET
from competition_pipeline.fills.windows import HOUR
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.store.tables import FILL_EVENTS, FILL_TOTALS

WIN_CONDITIONS = ("pnl", "volume")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


#: The advisory-lock namespace of standings refreshes (0x6370 is the windows' and the schema's).
_STANDINGS_LOCK_NAMESPACE = 0x6373


class CompetitionError(TerminalError, ValueError):
    """Bad competition input (unknown id, bad wallet, bad period): a clear message, no trace."""


@dataclass(frozen=True)
class Standing:
    competition_id: str
    wallet: str
    username: str | None
    rank: int
    pnl: Decimal
    volume: Decimal
    trades: int
    fees: Decimal
    medal: int | None
    #: When they were computed (every fill committed before is counted) and the newest fill of
    #: the period the computation saw: up to which fill they are.
    computed_at: dt.datetime | None = None
    through_fill_ts: dt.datetime | None = None
    through_trade_id: int | None = None


@dataclass(frozen=True)
class Competition:
    id: str
    name: str
    start_ts: dt.datetime
    end_ts: dt.datetime
    primary_win_condition: str


# The competition's period in windows: the whole windows inside it are summed from their totals
# (competition_fill_window_totals, store/totals.py), per registered wallet through the totals'
# (wallet, window_start) index, so other wallets' totals are never read; the (at most two)
# partial windows at its edges, when it starts or ends inside an hour, from their rows (the
# registered wallets' only), in one pass: they name their windows (the window_start index) and
# their fill_ts range (constants: the planner prunes the months). COALESCE(a, 0) + COALESCE(b, 0)
# keeps the scale a sum over the rows would have.
_STANDINGS = """
WITH edge AS MATERIALIZED (
    SELECT e.wallet, count(*) AS trades, sum(e.price * e.size) AS volume, sum(e.fee) AS fees,
           sum(COALESCE(e.realized_pnl, 0) - e.fee - COALESCE(e.builder_code_fee, 0)) AS pnl
    FROM {rows} e
    WHERE e.window_start = ANY(%(edges)s) AND NOT e.is_self_trade
      AND e.fill_ts >= %(start)s AND e.fill_ts < %(end)s
      AND e.fill_ts >= %(edges_start)s AND e.fill_ts < %(edges_end)s
      AND e.wallet = ANY(%(wallets)s)
    GROUP BY e.wallet
), stats AS (
    SELECT p.wallet,
           COALESCE(w.pnl, 0) + COALESCE(x.pnl, 0) AS pnl,
           COALESCE(w.volume, 0) + COALESCE(x.volume, 0) AS volume,
           (COALESCE(w.trades, 0) + COALESCE(x.trades, 0))::bigint AS trades,
           COALESCE(w.fees, 0) + COALESCE(x.fees, 0) AS fees
    FROM competition_participants p
    CROSS JOIN LATERAL (
        SELECT sum(t.realized_pnl - t.fees - t.builder_fees) AS pnl, sum(t.volume) AS volume,
               sum(t.trades) AS trades, sum(t.fees) AS fees
        FROM {totals} t
        WHERE t.wallet = p.wallet
          AND t.window_start >= %(whole_start)s AND t.window_start < %(whole_end)s
    ) w
    LEFT JOIN edge x ON x.wallet = p.wallet
    WHERE p.competition_id = %(id)s
), ranked AS (
    SELECT s.*, row_number() OVER (
        ORDER BY CASE WHEN %(win)s = 'pnl' THEN s.pnl ELSE s.volume END DESC,
                 CASE WHEN %(win)s = 'pnl' THEN s.volume ELSE s.pnl END DESC,
                 s.wallet ASC) AS rank
    FROM stats s
)
SELECT wallet, rank, pnl, volume, trades, fees, CASE WHEN rank <= 3 THEN rank END AS medal
FROM ranked"""


def standings_sql(totals: str = FILL_TOTALS, rows: str = FILL_EVENTS) -> str:
    """SQL: one competition's standings (parameters: :func:`period_params`), from ``totals``
    (a relation with the columns of competition_fill_window_totals) for the whole windows of its
    period and ``rows`` (with the columns of competition_fill_events) for the partial windows at
    its edges: the tables themselves, or a rebuild's before or after of them."""
    return _STANDINGS.format(totals=totals, rows=rows)


def _hour(instant: dt.datetime) -> dt.datetime:
    """The start of ``instant``'s UTC hour (a window's start)."""
    utc = instant.astimezone(dt.UTC)
    return utc.replace(minute=0, second=0, microsecond=0)


def period_windows(start: dt.datetime, end: dt.datetime) -> dict[str, object]:
    """The period ``[start, end)`` in windows: the first one it touches, the whole ones
    ``[whole_start, whole_end)`` and the partial ones at its edges (``edges``, spanning
    ``[edges_start, edges_end)``)."""
    first, last = _hour(start), _hour(end)
    edges = []
    if first != start:
        edges.append(first)
    if last != end and last not in edges:
        edges.append(last)
    whole_start = first if first == start else first + HOUR
    whole_end = max(last, whole_start)
    return {
        "first_window": first,
        "whole_start": whole_start,
        "whole_end": whole_end,
        "edges": edges,
        "edges_start": min(edges, default=start),
        "edges_end": max(edges, default=start) + HOUR if edges else start,
    }


def period_params(conn: psycopg.Connection, competition_id: str) -> dict[str, object]:
    """The parameters :func:`standings_sql` names, read from the competition's row."""
    row = conn.execute(
        "SELECT primary_win_condition, start_ts, end_ts FROM competitions WHERE id = %s",
        (competition_id,),
    ).fetchone()
    if row is None:
        raise CompetitionError(f"no competition {competition_id!r}")
    win, start, end = row
    # The registered wallets as a list (a hashed array filter on the edge rows: a plan that does
    # not depend on the participants' statistics, stale right after registering).
    wallets = conn.execute(
        "SELECT wallet FROM competition_participants WHERE competition_id = %s", (competition_id,)
    ).fetchall()
    return {
        "id": competition_id,
        "win": win,
        "start": start,
        "end": end,
        "wallets": [w for (w,) in wallets],
        **period_windows(start, end),
    }


# One statement, so one snapshot: the newest fill it names is of the same rows it ranked. The
# newest window of the period with totals (any wallet's, self-trades too) and the one before it
# (two index probes): the newest fill of the period is in one of them (the newest may be the end's
# partial window with no fill before the end yet; then the one before has fills, all inside).
_WINDOWS = f"""
    SELECT max(window_start) FROM {FILL_TOTALS}
    WHERE window_start >= %(first_window)s AND window_start < {{below}}"""
_REPLACE = f"""
WITH newest AS (
    SELECT n.fill_ts, n.trade_id
    FROM ({_WINDOWS.format(below="%(end)s")}) w1 (w)
    CROSS JOIN LATERAL (SELECT w1.w UNION ALL {_WINDOWS.format(below="w1.w")}) c (w)
    CROSS JOIN LATERAL (
        SELECT e.fill_ts, e.trade_id FROM {FILL_EVENTS} e
        WHERE e.window_start = c.w
          AND e.fill_ts >= c.w AND e.fill_ts < c.w + interval '1 hour'
          AND e.fill_ts >= %(start)s AND e.fill_ts < %(end)s
        ORDER BY e.fill_ts DESC, e.trade_id DESC LIMIT 1
    ) n
    ORDER BY n.fill_ts DESC, n.trade_id DESC LIMIT 1
)
INSERT INTO competition_standings
    (competition_id, wallet, rank, pnl, volume, trades, fees, medal, through_fill_ts,
     through_trade_id)
SELECT %(id)s, r.*, n.fill_ts, n.trade_id
FROM ({standings_sql()}) r LEFT JOIN newest n ON true"""


@dataclass(frozen=True)
class CompetitionSummary:
    id: str
    name: str
    start_ts: dt.datetime
    end_ts: dt.datetime
    win: str
    participants: int
    ranked: int


class Competitions:
    """Competition administration and standings over a :class:`CompetitionStore`."""

    def __init__(self, store: CompetitionStore) -> None:
        self.store = store

    def create(
        self, id: str, name: str, start: dt.datetime, end: dt.datetime, win: str
    ) -> Competition:
        if not _ID.fullmatch(id):
            raise CompetitionError(f"competition id {id!r}: letters, digits, _ . - (max 64)")
        if win not in WIN_CONDITIONS:
            raise CompetitionError(f"primary win condition must be one of {WIN_CONDITIONS}")
        if start.tzinfo is None or end.tzinfo is None:
            raise CompetitionError("start and end must carry a time zone (e.g. 2026-12-01T00:00Z)")
        if not start < end:
            raise CompetitionError("the competition must end after it starts")
        with self.store.connect() as conn:
            try:
                conn.execute(
                    "INSERT INTO competitions (id, name, start_ts, end_ts, primary_win_condition)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (id, name, start, end, win),
                )
            except psycopg.errors.UniqueViolation:
                raise CompetitionError(f"competition {id!r} already exists") from None
        return Competition(id, name, start, end, win)

    def register(self, competition_id: str, wallet: str, username: str | None = None) -> str:
        """Register a wallet (stored lowercase); registering it again updates the username."""
        if not WALLET.fullmatch(wallet):
            raise CompetitionError(f"wallet {wallet!r} is not 0x + 40 hex digits")
        wallet = wallet.lower()
        with self.store.connect() as conn:
            self._competition(conn, competition_id)
            conn.execute(
                "INSERT INTO competition_participants (competition_id, wallet, username)"
                " VALUES (%s, %s, %s) ON CONFLICT (competition_id, wallet)"
                " DO UPDATE SET username = EXCLUDED.username",
                (competition_id, wallet, username),
            )
        return wallet

    def active_overlapping(self, start: dt.datetime, end: dt.datetime) -> list[str]:
        """Competitions whose period overlaps ``[start, end)``."""
        with self.store.connect() as conn:
            rows = conn.execute(
                "SELECT id FROM competitions WHERE start_ts < %s AND end_ts > %s ORDER BY id",
                (end, start),
            ).fetchall()
        return [r[0] for r in rows]

    def summaries(self) -> list[CompetitionSummary]:
        """Every competition with its registered and ranked wallet counts (``competition list``)."""
        with self.store.connect() as conn:
            rows = conn.execute(
                "SELECT c.id, c.name, c.start_ts, c.end_ts, c.primary_win_condition,"
                " (SELECT count(*) FROM competition_participants p WHERE p.competition_id = c.id),"
                " (SELECT count(*) FROM competition_standings s WHERE s.competition_id = c.id)"
                " FROM competitions c ORDER BY c.start_ts, c.id"
            ).fetchall()
        return [CompetitionSummary(*row) for row in rows]

    def participant_count(self, competition_id: str) -> int:
        with self.store.connect() as conn:
            self._competition(conn, competition_id)
            row = conn.execute(
                "SELECT count(*) FROM competition_participants WHERE competition_id = %s",
                (competition_id,),
            ).fetchone()
        return int(row[0])

    def all_ids(self) -> list[str]:
        with self.store.connect() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM competitions ORDER BY id")]

    def refresh(self, competition_id: str) -> list[Standing]:
        """Recompute one competition's standings and replace them in one transaction."""
        with self.store.connect() as conn:
            self._competition(conn, competition_id)
            with conn.transaction():
                # Two refreshes of one competition take turns. An advisory lock, not the row's:
                # any row lock (even FOR KEY SHARE) needs UPDATE on competitions, which would let
                # the recorder change a competition (issue 33).
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (_STANDINGS_LOCK_NAMESPACE, competition_id),
                )
                conn.execute(
                    "DELETE FROM competition_standings WHERE competition_id = %s", (competition_id,)
                )
                conn.execute(_REPLACE, period_params(conn, competition_id))
            return self._standings(conn, competition_id)  # on the same connection

    def standings(self, competition_id: str) -> list[Standing]:
        with self.store.connect() as conn:
            self._competition(conn, competition_id)
            return self._standings(conn, competition_id)

    def _standings(self, conn: psycopg.Connection, competition_id: str) -> list[Standing]:
        rows = conn.execute(
            "SELECT s.competition_id, s.wallet, p.username, s.rank, s.pnl, s.volume,"
            " s.trades, s.fees, s.medal, s.computed_at, s.through_fill_ts,"
            " s.through_trade_id FROM competition_standings s"
            " LEFT JOIN competition_participants p"
            "   ON p.competition_id = s.competition_id AND p.wallet = s.wallet"
            " WHERE s.competition_id = %s ORDER BY s.rank",
            (competition_id,),
        ).fetchall()
        return [Standing(*row) for row in rows]

    def _competition(self, conn: psycopg.Connection, competition_id: str) -> Competition:
        row = conn.execute(
            "SELECT id, name, start_ts, end_ts, primary_win_condition FROM competitions"
            " WHERE id = %s",
            (competition_id,),
        ).fetchone()
        if row is None:
            raise CompetitionError(f"no competition {competition_id!r}")
        return Competition(*row)
