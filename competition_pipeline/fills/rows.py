"""Fills -> competition rows: one row per ``(trade_id, wallet)`` (contract, section 2); and the
staged layouts of those rows and of rejected lines, each written once with its SQL types.

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
from typing import NamedTuple

from competition_pipeline.fills.contract import Fill

#: The staging row layout the loader COPYs: each field and its SQL type, in row order. The one
#: place this layout is written: the staging table, the COPY and the benchmark read it from here.
ROW_TYPES = {
    "seq": "bigint",
    "source_file": "text",
    "line_no": "bigint",
    "trade_id": "bigint",
    "wallet": "text",
    "role": "text",
    "side": "text",
    "counterparty": "text",
    "is_self_trade": "boolean",
    "symbol": "text",
    "price": "numeric",
    "size": "numeric",
    "fee": "numeric",
    "realized_pnl": "numeric",
    "builder_code_address": "text",
    "builder_code_fee": "numeric",
    "source_type": "text",
    "taker_order_id": "bigint",
    "maker_order_id": "bigint",
    "underlying_notional": "numeric",
    "fill_ts_ms": "bigint",
}
ROW_FIELDS = tuple(ROW_TYPES)
#: SQL type -> the Python type a staged value has (decimals stay strings, see above).
_PYTHON_TYPES = {"bigint": int, "text": str, "numeric": str, "boolean": bool}
#: A wallet row as staged: a plain tuple in :data:`ROW_FIELDS` order, which COPY writes as it is.
Row = tuple
#: A staged row read by name: ``named(row).wallet``, never ``row[4]`` (how code outside ``fills/``
#: reads one). Rows are not staged as this named tuple: the garbage collector stops tracking a
#: plain tuple of plain values, not a tuple subclass, and a window's hundreds of thousands of
#: rows as ``NamedRow`` cost the parse a third more CPU (1.35 s -> 1.8 s for 200,000 fills).
NamedRow = NamedTuple(  # type: ignore[misc]
    "NamedRow", [(name, _PYTHON_TYPES[t] | None) for name, t in ROW_TYPES.items()]
)
named = NamedRow._make

#: The staging layout of a rejected line (a :data:`RejectRow`), with its SQL types.
REJECT_TYPES = {
    "source_file": "text",
    "line_no": "bigint",
    "raw_line": "text",
    "raw_line_escaped": "boolean",
    "reason": "text",
}
REJECT_FIELDS = tuple(REJECT_TYPES)


class RejectRow(NamedTuple):
    """A rejected line as staged, in :data:`REJECT_FIELDS` order (asserted below); named when
    made, unlike :data:`Row`: a reject is the exception, and costs far more to make than this."""

    source_file: str
    line_no: int
    raw_line: str
    raw_line_escaped: bool
    reason: str


assert RejectRow._fields == REJECT_FIELDS


def column_definitions(types: dict[str, str]) -> str:
    """SQL: the column list of a table holding one of the layouts above (``name type, ...``)."""
    return ", ".join(f"{name} {sql_type}" for name, sql_type in types.items())


class RawText(NamedTuple):
    """A rejected line as storable text, and whether it had to be escaped to be stored."""

    text: str
    escaped: bool


def raw_text(data: bytes) -> RawText:
    """Lossless: valid UTF-8 without NUL is stored as it is; anything else is escaped (``\\`` for
    a backslash, ``\\xNN`` for a byte that is not UTF-8, ``\\x00`` for NUL) and flagged."""
    try:
        text = data.decode("utf-8")
        if "\x00" not in text:
            return RawText(text, False)
    except UnicodeDecodeError:
        pass
    escaped = data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return RawText(escaped.replace("\x00", "\\x00"), True)


def reject_row(source_file: str, line_no: int, data: bytes, reason: str) -> RejectRow:
    """A rejected line in :data:`REJECT_FIELDS` order, its bytes made storable."""
    text, escaped = raw_text(data)
    return RejectRow(source_file, line_no, text, escaped, reason)


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
