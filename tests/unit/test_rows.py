"""fill_rows: one row per (trade_id, wallet) (fill-journal.md, section 2).

No database, no Dagster.
"""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.rows import ROW_FIELDS, fill_rows, named
from tests.helpers.journal import EXAMPLE_FILL, W1, W2

TAKER, MAKER = W1, W2  # the contract example's wallets
BUILDER = "0x3333333333333333333333333333333333333333"

#: The contract's example with a builder code, from an RFQ, and a maker pnl: every field set.
FILL = msgspec.structs.replace(
    EXAMPLE_FILL,
    builder_code_address=BUILDER,
    builder_code_fee="0.01",
    source_type="rfq",
    maker_realized_pnl="3.25",
)


def as_dicts(rows: list[tuple]) -> list[dict]:
    for row in rows:
        assert len(row) == len(ROW_FIELDS)
    return [dict(zip(ROW_FIELDS, row, strict=True)) for row in rows]


def parse_required_only(taker_side: str, taker_wallet: str, maker_wallet: str) -> Fill:
    """A parsed line with only the contract's required fields (no accounting, no source)."""
    msg = {
        "type": "OrderFilled",
        "fill": {
            "trade_id": 5,
            "taker_order_id": 1,
            "maker_order_id": 2,
            "symbol": "BTC-PERP",
            "price": "100",
            "size": "2",
            "fee": "0.2",
            "taker_side": taker_side,
            "taker_wallet_address": taker_wallet,
            "maker_wallet_address": maker_wallet,
            "timestamp": 1000,
        },
    }
    fill = parse_line(json.dumps(msg))
    assert type(fill) is Fill
    return fill


def test_row_fields_are_unique_and_start_with_the_origin() -> None:
    assert len(set(ROW_FIELDS)) == len(ROW_FIELDS)
    assert ROW_FIELDS[:4] == ("seq", "source_file", "line_no", "trade_id")


def test_normal_fill_gives_a_taker_row_and_a_maker_row() -> None:
    rows = fill_rows(FILL, seq=7, source_file="date=2025-11-24/hour=12/a.jsonl", line_no=3)
    assert len(rows) == 2
    taker, maker = as_dicts(rows)
    common = {
        "seq": 7,
        "source_file": "date=2025-11-24/hour=12/a.jsonl",
        "line_no": 3,
        "trade_id": 81234567,
        "is_self_trade": False,
        "symbol": "BTC-20260331-100000-C",
        "price": "1520.5",
        "size": "0.25",
        "source_type": "rfq",
        "taker_order_id": 991,
        "maker_order_id": 774,
        "underlying_notional": "24375.0",
        "fill_ts_ms": 1763985600123,
    }
    assert taker == common | {
        "wallet": TAKER,
        "role": "taker",
        "side": "Buy",
        "counterparty": MAKER,
        "fee": "0.38",
        "realized_pnl": "-12.5",
        "builder_code_address": BUILDER,
        "builder_code_fee": "0.01",
    }
    assert maker == common | {
        "wallet": MAKER,
        "role": "maker",
        "side": "Sell",
        "counterparty": TAKER,
        "fee": "-0.05",
        "realized_pnl": "3.25",
        "builder_code_address": None,
        "builder_code_fee": None,
    }


def test_rows_are_plain_tuples_in_row_fields_order() -> None:
    taker, maker = fill_rows(FILL, 1, "f", 1)
    assert type(taker) is tuple and type(maker) is tuple
    assert taker[ROW_FIELDS.index("wallet")] == TAKER
    assert maker[ROW_FIELDS.index("wallet")] == MAKER
    assert taker[ROW_FIELDS.index("fill_ts_ms")] == FILL.timestamp_ms


def test_a_row_is_read_by_the_names_of_row_fields() -> None:
    taker, _ = fill_rows(FILL, 1, "f", 1)
    assert named(taker)._fields == ROW_FIELDS
    assert (named(taker).trade_id, named(taker).wallet) == (FILL.trade_id, TAKER)
    assert tuple(named(taker)) == taker


@pytest.mark.parametrize(("taker_side", "maker_side"), [("Buy", "Sell"), ("Sell", "Buy")])
def test_maker_side_is_the_opposite_of_the_taker_side(taker_side: str, maker_side: str) -> None:
    fill = msgspec.structs.replace(FILL, taker_side=taker_side)
    taker, maker = as_dicts(fill_rows(fill, 1, "f", 1))
    assert (taker["side"], maker["side"]) == (taker_side, maker_side)


def test_rows_are_keyed_by_trade_id_and_wallet() -> None:
    rows = as_dicts(fill_rows(FILL, 1, "f", 1))
    keys = {(row["trade_id"], row["wallet"]) for row in rows}
    assert keys == {(81234567, TAKER), (81234567, MAKER)}


def test_null_pnl_and_no_builder_stay_null() -> None:
    fill = msgspec.structs.replace(
        FILL,
        builder_code_address=None,
        builder_code_fee=None,
        taker_realized_pnl=None,
        maker_realized_pnl=None,
        underlying_notional=None,
    )
    for row in as_dicts(fill_rows(fill, 1, "f", 1)):
        assert row["realized_pnl"] is None
        assert row["builder_code_address"] is None and row["builder_code_fee"] is None
        assert row["underlying_notional"] is None


def test_rows_from_a_parsed_line_without_accounting() -> None:
    fill = parse_required_only("sell", TAKER.upper().replace("0X", "0x"), MAKER)
    taker, maker = as_dicts(fill_rows(fill, 9, "x.jsonl", 4))
    assert (taker["wallet"], taker["side"], taker["fee"]) == (TAKER, "Sell", "0.2")
    assert (maker["wallet"], maker["side"], maker["fee"]) == (MAKER, "Buy", "0")
    assert taker["source_type"] == maker["source_type"] == "orderbook"


# --- self-trades --------------------------------------------------------------------------------

SELF = msgspec.structs.replace(FILL, maker_wallet=TAKER)


def test_self_trade_gives_one_flagged_row() -> None:
    rows = as_dicts(fill_rows(SELF, 11, "s.jsonl", 2))
    assert len(rows) == 1
    (row,) = rows
    assert row["role"] == "self"
    assert row["is_self_trade"] is True
    assert row["wallet"] == row["counterparty"] == TAKER
    assert (row["seq"], row["source_file"], row["line_no"]) == (11, "s.jsonl", 2)
    assert (row["trade_id"], row["symbol"], row["price"], row["size"]) == (
        81234567,
        "BTC-20260331-100000-C",
        "1520.5",
        "0.25",
    )
    assert row["side"] in ("Buy", "Sell")
    assert row["fill_ts_ms"] == 1763985600123
    assert row["source_type"] == "rfq"
    assert (row["taker_order_id"], row["maker_order_id"]) == (991, 774)


def test_self_trade_fee_is_the_exact_sum_of_both_fees() -> None:
    (row,) = as_dicts(fill_rows(SELF, 1, "f", 1))
    assert row["fee"] == "0.33"  # 0.38 + (-0.05)


def test_self_trade_keeps_the_builder_code_the_taker_paid() -> None:
    (row,) = as_dicts(fill_rows(SELF, 1, "f", 1))
    assert (row["builder_code_address"], row["builder_code_fee"]) == (BUILDER, "0.01")


@pytest.mark.parametrize(
    ("taker_pnl", "maker_pnl", "expected"),
    [
        (None, None, None),
        ("1.5", None, "1.5"),
        (None, "-2", "-2"),
        ("-12.5", "2.25", "-10.25"),
        ("0.1", "0.2", "0.3"),
        ("5", "-5", "0"),
    ],
)
def test_self_trade_pnl_is_the_sum_with_null_as_absent(
    taker_pnl: str | None, maker_pnl: str | None, expected: str | None
) -> None:
    fill = msgspec.structs.replace(SELF, taker_realized_pnl=taker_pnl, maker_realized_pnl=maker_pnl)
    (row,) = as_dicts(fill_rows(fill, 1, "f", 1))
    if expected is None:
        assert row["realized_pnl"] is None
    else:
        assert Decimal(row["realized_pnl"]) == Decimal(expected)
        assert type(row["realized_pnl"]) is str


def test_self_trade_detection_is_on_the_stored_lowercase_wallet() -> None:
    fill = parse_required_only(
        "Buy",
        "0xABCDEF0123456789ABCDEF0123456789ABCDEF01",
        "0xabcdef0123456789abcdef0123456789abcdef01",
    )
    (row,) = as_dicts(fill_rows(fill, 1, "f", 1))
    assert row["role"] == "self" and row["is_self_trade"] is True


# --- exact decimal arithmetic -------------------------------------------------------------------


def _scaled(text: str, places: int) -> int:
    """``text`` as an integer count of 10**-places (exact, no Decimal)."""
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole + fraction.ljust(places, "0"))
    return -value if negative else value


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("0.123456789012345678901234567890", "0.000000000000000000000000000001"),
        ("1.000000000000000000000000000001", "-0.000000000000000000000000000002"),
        ("9" * 40 + "." + "9" * 40, "9" * 40 + "." + "9" * 40),
        ("-" + "9" * 40 + "." + "9" * 40, "0." + "0" * 39 + "1"),
        (
            "12345678901234567890.123456789012345678901234567890",
            "-0.000000000000000000000000000009",
        ),
    ],
)
def test_self_trade_sums_are_exact_for_long_decimals(a: str, b: str) -> None:
    fill = msgspec.structs.replace(
        SELF, taker_fee=a, maker_fee=b, taker_realized_pnl=b, maker_realized_pnl=a
    )
    (row,) = as_dicts(fill_rows(fill, 1, "f", 1))
    expected = _scaled(a, 40) + _scaled(b, 40)
    for field in ("fee", "realized_pnl"):
        value = Decimal(row[field])
        assert value.is_finite()
        assert value == Decimal(f"{expected}E-40"), (field, row[field])


def test_thirty_fraction_digits_add_to_the_exact_string() -> None:
    fill = msgspec.structs.replace(
        SELF,
        taker_fee="0.123456789012345678901234567890",
        maker_fee="0.000000000000000000000000000001",
    )
    (row,) = as_dicts(fill_rows(fill, 1, "f", 1))
    assert row["fee"] == "0.123456789012345678901234567891"


def test_tiny_self_trade_fees_add_exactly() -> None:
    fill = msgspec.structs.replace(SELF, taker_fee="0.0000001", maker_fee="0.0000002")
    (row,) = as_dicts(fill_rows(fill, 1, "f", 1))
    assert Decimal(row["fee"]) == Decimal("0.0000003")
