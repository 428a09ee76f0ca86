"""The standings as the release before the per-window totals computed them (over the rows only),
kept as the reference the totals-based standings must equal rank by rank, exactly; and a journal
of varied fills over a month boundary to compare them on."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import psycopg

from competition_pipeline.fills.windows import Window
from competition_pipeline.store import dburl
from tests.helpers.journal import fill, write_segment


def _rows(url: str, statement: str, params: dict) -> list[tuple]:
    with psycopg.connect(dburl.libpq(url)) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


#: store/standings.py's query before migration 0007 (rows only, every fill of the period), the
#: period and win condition read from the competition's row instead of parameters.
REFERENCE_SQL = """
WITH stats AS (
    SELECT p.wallet,
           COALESCE(sum(COALESCE(e.realized_pnl, 0) - e.fee - COALESCE(e.builder_code_fee, 0)), 0)
               AS pnl,
           COALESCE(sum(e.price * e.size), 0) AS volume,
           count(e.trade_id) AS trades,
           COALESCE(sum(e.fee), 0) AS fees
    FROM competition_participants p
    JOIN competitions c ON c.id = p.competition_id
    LEFT JOIN competition_fill_events e
           ON e.wallet = p.wallet AND NOT e.is_self_trade
          AND e.fill_ts >= c.start_ts AND e.fill_ts < c.end_ts
    WHERE p.competition_id = %(id)s
    GROUP BY p.wallet
), ranked AS (
    SELECT s.*, row_number() OVER (
        ORDER BY CASE WHEN c.primary_win_condition = 'pnl' THEN s.pnl ELSE s.volume END DESC,
                 CASE WHEN c.primary_win_condition = 'pnl' THEN s.volume ELSE s.pnl END DESC,
                 s.wallet ASC) AS rank
    FROM stats s, competitions c WHERE c.id = %(id)s
)
SELECT wallet, rank, pnl, volume, trades, fees, CASE WHEN rank <= 3 THEN rank END AS medal
FROM ranked ORDER BY rank"""
#: The newest fill of the period (what ``through_fill_ts``/``through_trade_id`` name).
REFERENCE_NEWEST = """
SELECT e.fill_ts, e.trade_id FROM competition_fill_events e, competitions c
WHERE c.id = %(id)s AND e.fill_ts >= c.start_ts AND e.fill_ts < c.end_ts
ORDER BY e.fill_ts DESC, e.trade_id DESC LIMIT 1"""


def reference(url: str, competition_id: str) -> list[tuple]:
    """(rank, wallet, pnl, volume, trades, fees, medal) by rank, over the rows."""
    rows = _rows(url, REFERENCE_SQL, {"id": competition_id})
    return [(r[1], r[0], r[2], r[3], r[4], r[5], r[6]) for r in rows]


def reference_newest(url: str, competition_id: str) -> tuple | None:
    rows = _rows(url, REFERENCE_NEWEST, {"id": competition_id})
    return rows[0] if rows else None


#: Wallets of the varied journal: A..F trade, A..C self-trade too, U trades but is never
#: registered, N is registered and never trades.
WALLETS = {name: "0x" + (ch * 40) for name, ch in zip("ABCDEFUN", "abcdef98", strict=True)}
BUILDER = "0x" + "b" * 40
#: Four hours over the October/November 2026 month boundary (two partitions).
HOURS = [Window.from_key(k) for k in ("2026-10-31-22:00", "2026-10-31-23:00")] + [
    Window.from_key(k) for k in ("2026-11-01-00:00", "2026-11-01-01:00")
]
_DECIMALS = ("0.5", "1", "2.25", "10.125", "0.0001", "-3.5", "7", "100.10")


def _amount(rng: random.Random, *, negative: bool = True) -> str:
    value = Decimal(rng.choice(_DECIMALS))
    return str(value if negative else abs(value))


def varied_messages(window: Window, first_trade_id: int, count: int, seed: int) -> list[dict]:
    """``count`` fills in ``window``: random wallets (self-trades, the unregistered U), prices,
    sizes and fees of several scales, rebates, PnL on some legs only, builder fees on some; and
    one pair of fills that ties E and F exactly."""
    rng = random.Random(seed)
    traders = [WALLETS[n] for n in "ABCDEFU"]
    messages = []
    for i in range(count):
        taker = rng.choice(traders)
        maker = taker if rng.random() < 0.15 and taker in (WALLETS["A"], WALLETS["B"]) else None
        maker = maker or rng.choice([w for w in traders if w != taker])
        fields: dict = {
            "taker_wallet_address": taker,
            "maker_wallet_address": maker,
            "price": _amount(rng, negative=False),
            "size": _amount(rng, negative=False),
            "fee": _amount(rng, negative=False),
            "taker_realized_pnl": _amount(rng) if rng.random() < 0.6 else None,
            "maker_realized_pnl": _amount(rng) if rng.random() < 0.4 else None,
            "accounting": {"taker_fee": _amount(rng), "maker_fee": _amount(rng)},
        }
        if rng.random() < 0.3:
            fee = _amount(rng, negative=False)
            fields.update(builder_code_address=BUILDER, builder_code_fee=fee)
        ts = window.start_ms + rng.randrange(0, 3_600_000)
        if i == 0:
            ts = window.start_ms  # the window's first instant
        elif i == 1:
            ts = window.end_ms - 1  # its last
        messages.append(fill(first_trade_id + i, ts, **fields))
    tie = {"price": "3", "size": "2", "fee": "0.5", "taker_realized_pnl": "4", "accounting": None}
    for n, taker in enumerate((WALLETS["E"], WALLETS["F"])):
        messages.append(
            fill(
                first_trade_id + count + n,
                window.start_ms + 1_800_000,
                taker_wallet_address=taker,
                maker_wallet_address=WALLETS["U"],
                **tie,
            )
        )
    return messages


def write_varied_journal(journal: Path, per_hour: int = 40) -> None:
    """One segment of :func:`varied_messages` in each of :data:`HOURS`."""
    for n, window in enumerate(HOURS):
        messages = varied_messages(window, 1_000 * (n + 1), per_hour, seed=n)
        write_segment(journal, window, "seg-1.jsonl", messages)
