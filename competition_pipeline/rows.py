"""Fills -> competition rows: one row per ``(trade_id, wallet)`` (contract, section 2).

The taker's row (role ``taker``, side = taker side, taker fee, taker PnL, the builder code and fee
the taker paid) and the maker's row (role ``maker``, the opposite side, maker fee, maker PnL).
A self-trade (taker wallet = maker wallet) gives one row, role ``self``, flagged, whose fee and PnL
are the sums of both legs (the wallet paid both fees) so that nothing is lost if it is ever counted.

Pure and Dagster-free. Decimals stay strings end to end (PostgreSQL parses them into NUMERIC); the
only arithmetic here is the self-trade sum, done in a 200-digit context so it is exact for every
decimal the contract accepts. Notional (price x size) and the fill time are computed by PostgreSQL
in the loader, exactly.
"""

from __future__ import annotations

from decimal import Context, Decimal

from competition_pipeline.contract import Fill

#: The staging row layout the loader COPYs (``store.STAGE_COLUMNS`` mirrors it).
ROW_FIELDS = (
    "seq",
    "source_file",
    "line_no",
    "trade_id",
    "wallet",
    "role",
    "side",
    "counterparty",
    "is_self_trade",
    "symbol",
    "price",
    "size",
    "fee",
    "realized_pnl",
    "builder_code_address",
    "builder_code_fee",
    "source_type",
    "taker_order_id",
    "maker_order_id",
    "underlying_notional",
    "fill_ts_ms",
)

Row = tuple
_EXACT = Context(prec=200)
_OPPOSITE = {"Buy": "Sell", "Sell": "Buy"}


def _add(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return str(_EXACT.add(Decimal(a), Decimal(b)))


def fill_rows(fill: Fill, seq: int, source_file: str, line_no: int) -> list[Row]:
    """The wallet rows of one fill, in ``ROW_FIELDS`` order."""
    common_tail = (
        fill.source_type,
        fill.taker_order_id,
        fill.maker_order_id,
        fill.underlying_notional,
        fill.timestamp_ms,
    )
    head = (seq, source_file, line_no, fill.trade_id)
    if fill.taker_wallet == fill.maker_wallet:
        wallet = fill.taker_wallet
        return [
            head
            + (wallet, "self", fill.taker_side, wallet, True, fill.symbol, fill.price, fill.size)
            + (
                _add(fill.taker_fee, fill.maker_fee),
                _add(fill.taker_realized_pnl, fill.maker_realized_pnl),
                fill.builder_code_address,
                fill.builder_code_fee,
            )
            + common_tail
        ]
    taker = (
        head
        + (fill.taker_wallet, "taker", fill.taker_side, fill.maker_wallet, False)
        + (fill.symbol, fill.price, fill.size, fill.taker_fee, fill.taker_realized_pnl)
        + (fill.builder_code_address, fill.builder_code_fee)
        + common_tail
    )
    maker = (
        head
        + (fill.maker_wallet, "maker", _OPPOSITE[fill.taker_side], fill.taker_wallet, False)
        + (fill.symbol, fill.price, fill.size, fill.maker_fee, fill.maker_realized_pnl)
        + (None, None)
        + common_tail
    )
    return [taker, maker]
