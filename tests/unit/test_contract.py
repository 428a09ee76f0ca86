"""parse_line against every rule of the contract's table (fill-journal.md, section 1).

Pure unit tests: no database, no Dagster.
"""

from __future__ import annotations

import copy
import json
import random
import re
from decimal import Decimal

import pytest

from competition_pipeline.fills.contract import (
    MAX_INT64,
    SKIPPED,
    Fill,
    Reject,
    parse_checked,
    parse_line,
)
from tests.helpers.journal import EXAMPLE, EXAMPLE_FILL, W1, W2

TAKER, MAKER = W1, W2  # the contract example's wallets


REQUIRED_FILL_FIELDS = (
    "trade_id",
    "taker_order_id",
    "maker_order_id",
    "symbol",
    "price",
    "size",
    "fee",
    "taker_side",
    "taker_wallet_address",
    "maker_wallet_address",
    "timestamp",
)

DELETE = object()


def message(fill: dict | None = None, /, **top: object) -> dict:
    """The example message with ``fill`` fields changed (DELETE removes one) and top-level keys."""
    msg = copy.deepcopy(EXAMPLE)
    for key, value in (fill or {}).items():
        if value is DELETE:
            msg["fill"].pop(key, None)
        else:
            msg["fill"][key] = value
    for key, value in top.items():
        if value is DELETE:
            msg.pop(key, None)
        else:
            msg[key] = value
    return msg


def encode(msg: object) -> bytes:
    return json.dumps(msg).encode()


def parse(msg: object) -> object:
    return parse_line(encode(msg))


def parse_fill(msg: object) -> Fill:
    result = parse(msg)
    assert type(result) is Fill, result
    return result


def names(reason: str, field: str) -> bool:
    """``reason`` names ``field`` as a whole word (``fee`` is not named by ``taker_fee``)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(field)}(?![A-Za-z0-9_])", reason) is not None


def rejected(line: bytes | str | dict, field: str | None = None) -> str:
    result = parse_line(line) if isinstance(line, bytes | str) else parse(line)
    assert type(result) is Reject, f"expected a reject, got {result!r}"
    assert isinstance(result.reason, str) and result.reason.strip()
    if field is not None:
        assert names(result.reason, field), f"reason {result.reason!r} does not name {field!r}"
    return result.reason


# --- a valid fill -------------------------------------------------------------------------------


def test_contract_example_parses_into_every_field() -> None:
    fill = parse_fill(EXAMPLE)
    assert fill == EXAMPLE_FILL
    # Decimals are strings, never floats.
    for value in (fill.price, fill.size, fill.taker_fee, fill.maker_fee, fill.underlying_notional):
        assert type(value) is str


def test_str_and_bytes_input_give_the_same_fill() -> None:
    text = json.dumps(EXAMPLE)
    assert parse_line(text) == parse_line(text.encode()) == parse_fill(EXAMPLE)


def test_every_optional_field_set() -> None:
    fill = parse_fill(
        message(
            {
                "builder_code_address": "0xABCDEFabcdef0123456789ABCDEFabcdef012345",
                "builder_code_fee": "0.0125",
                "taker_realized_pnl": "3.5",
                "maker_realized_pnl": "-7.25",
                "underlying_notional": None,
            }
        )
    )
    assert fill.builder_code_address == "0xabcdefabcdef0123456789abcdefabcdef012345"
    assert fill.builder_code_fee == "0.0125"
    assert fill.taker_realized_pnl == "3.5"
    assert fill.maker_realized_pnl == "-7.25"
    assert fill.underlying_notional is None


@pytest.mark.parametrize(
    "field", ["builder_code_address", "builder_code_fee", "underlying_notional", "is_taker"]
)
def test_optional_field_may_be_absent(field: str) -> None:
    fill = parse_fill(message({field: DELETE}))
    assert fill.trade_id == 81234567


@pytest.mark.parametrize(
    "value",
    [
        "1520.50000000000000000000000000000001",
        "0.10",
        "000123.4500",
        "1" * 40 + "." + "9" * 40,
        "0.0000000000000000000000000000000000000001",
    ],
)
def test_decimals_are_kept_as_exact_strings(value: str) -> None:
    fill = parse_fill(
        message(
            {"price": value, "size": value, "fee": value, "underlying_notional": value},
            accounting={"taker_fee": value, "maker_fee": "-" + value},
        )
    )
    assert fill.price == fill.size == fill.taker_fee == fill.underlying_notional == value
    assert fill.maker_fee == "-" + value
    assert Decimal(fill.price) == Decimal(value)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("Buy", "Buy"), ("Sell", "Sell"), ("buy", "Buy"), ("SELL", "Sell"), ("bUy", "Buy")],
)
def test_taker_side_accepts_any_letter_case(given: str, stored: str) -> None:
    assert parse_fill(message({"taker_side": given})).taker_side == stored


def test_wallets_any_case_are_stored_lowercase() -> None:
    taker = "0xAbCdEf0123456789ABCDEF0123456789abcdef01"
    maker = "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    fill = parse_fill(message({"taker_wallet_address": taker, "maker_wallet_address": maker}))
    assert fill.taker_wallet == taker.lower()
    assert fill.maker_wallet == maker.lower()


def test_same_wallet_in_different_case_is_one_wallet() -> None:
    fill = parse_fill(
        message(
            {
                "taker_wallet_address": TAKER.upper().replace("0X", "0x"),
                "maker_wallet_address": TAKER,
            }
        )
    )
    assert fill.taker_wallet == fill.maker_wallet == TAKER


# --- accounting ---------------------------------------------------------------------------------


def test_absent_accounting_takes_fee_for_taker_and_zero_for_maker() -> None:
    fill = parse_fill(message({"fee": "0.41"}, accounting=DELETE))
    assert fill.taker_fee == "0.41"
    assert fill.maker_fee == "0"


def test_null_accounting_is_like_absent() -> None:
    fill = parse_fill(message({"fee": "0.41"}, accounting=None))
    assert (fill.taker_fee, fill.maker_fee) == ("0.41", "0")


def test_accounting_is_authoritative_over_fee() -> None:
    fill = parse_fill(message({"fee": "0.38"}, accounting={"taker_fee": "0.5", "maker_fee": "0"}))
    assert (fill.taker_fee, fill.maker_fee) == ("0.5", "0")


def test_negative_fees_are_rebates_and_kept() -> None:
    fill = parse_fill(message(accounting={"taker_fee": "-0.01", "maker_fee": "-0.05"}))
    assert (fill.taker_fee, fill.maker_fee) == ("-0.01", "-0.05")


# --- forward compatibility ----------------------------------------------------------------------


def test_unknown_extra_fields_are_ignored_everywhere() -> None:
    msg = message(
        {
            "new_fill_field": {"nested": [1, 2, {"x": None}]},
            "another": "text",
            "source": {"type": "orderbook", "venue": "main", "extra": [1.5]},
        },
        engine_version="9.9",
        sequence=123456789012345678901234567890,
        meta={"k": [True, False, None]},
    )
    msg["accounting"]["currency"] = "USDC"
    assert parse_fill(msg) == parse_fill(EXAMPLE)


@pytest.mark.parametrize(
    "kind",
    ["OrderPlaced", "OrderCancelled", "OrderUpdated", "Heartbeat", "SomethingNew", ""],
)
def test_other_message_types_are_skipped(kind: str) -> None:
    assert parse({"type": kind, "order_id": 5}) is SKIPPED
    # The body of a skipped message is not validated: it is counted, never rejected.
    assert parse({"type": kind, "fill": "not an object", "accounting": 5}) is SKIPPED
    assert parse_line(json.dumps({"type": kind})) is SKIPPED


def test_skipped_is_a_singleton_distinct_from_results() -> None:
    assert repr(SKIPPED) == "SKIPPED"
    assert type(SKIPPED) is not Fill and type(SKIPPED) is not Reject


# --- source -------------------------------------------------------------------------------------


def test_source_absent_defaults_to_orderbook() -> None:
    assert parse_fill(message({"source": DELETE})).source_type == "orderbook"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"type": "orderbook"}, "orderbook"),
        ({"type": "rfq", "rfq_id": "r-1", "quote_id": 77}, "rfq"),
        ({"type": "liquidation"}, "liquidation"),
        ({"type": "dark_pool_v2"}, "dark_pool_v2"),
    ],
)
def test_source_type_is_kept(source: dict, expected: str) -> None:
    assert parse_fill(message({"source": source})).source_type == expected


@pytest.mark.parametrize("source", ["orderbook", ["orderbook"], 5, True])
def test_source_not_an_object_is_rejected(source: object) -> None:
    rejected(message({"source": source}), "source")


@pytest.mark.parametrize("source", [{"type": 5}, {"type": None}, {"type": ["rfq"]}, {}])
def test_source_type_not_a_string_is_rejected(source: dict) -> None:
    rejected(message({"source": source}), "source.type")


# --- missing and wrongly typed fields -----------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED_FILL_FIELDS)
def test_missing_required_field_is_rejected(field: str) -> None:
    rejected(message({field: DELETE}), field)


@pytest.mark.parametrize("field", REQUIRED_FILL_FIELDS)
def test_required_field_null_is_rejected(field: str) -> None:
    rejected(message({field: None}), field)


@pytest.mark.parametrize("field", ["price", "size", "fee"])
@pytest.mark.parametrize("number", [1520.5, 1, 0.25])
def test_json_number_instead_of_decimal_string_is_rejected(field: str, number: float) -> None:
    rejected(message({field: number}), field)


BAD_DECIMALS = [
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1e5",
    "1E5",
    "1.5e-3",
    "",
    "+1",
    ".5",
    "1.",
    "-",
    "1,5",
    " 1",
    "1 ",
    "1\n",
    "0x10",
    "1_000",
    "1.2.3",
    "--1",
    "\uff11",  # fullwidth digit one
    "\u0661",  # arabic-indic digit one
    "1" * 41,
    "0." + "1" * 41,
]


@pytest.mark.parametrize(
    "field", ["price", "size", "fee", "builder_code_fee", "underlying_notional"]
)
@pytest.mark.parametrize("value", BAD_DECIMALS)
def test_bad_decimal_string_is_rejected(field: str, value: str) -> None:
    rejected(message({field: value}), field)


@pytest.mark.parametrize("field", ["taker_realized_pnl", "maker_realized_pnl"])
@pytest.mark.parametrize("value", ["NaN", "1e5", "", "+1", ".5", "1.", 12.5, True, ["1"]])
def test_bad_realized_pnl_is_rejected(field: str, value: object) -> None:
    rejected(message({field: value}), field)


@pytest.mark.parametrize("field", ["taker_fee", "maker_fee"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e5", "", "+1", ".5", "1.", 0.05, None])
def test_bad_accounting_fee_is_rejected(field: str, value: object) -> None:
    accounting = dict(EXAMPLE["accounting"])
    accounting[field] = value
    rejected(message(accounting=accounting), field)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_json_number_literals_are_rejected(literal: bytes) -> None:
    line = encode(message({"price": "PLACEHOLDER"})).replace(b'"PLACEHOLDER"', literal)
    rejected(line)


@pytest.mark.parametrize("field", ["price", "size"])
@pytest.mark.parametrize("value", ["0", "0.000", "000", "-1", "-0.5", "-0", "-0.0001"])
def test_price_and_size_must_be_positive(field: str, value: str) -> None:
    rejected(message({field: value}), field)


@pytest.mark.parametrize("value", ["0.0000000001", "1", "100000", "0.5"])
def test_small_and_large_positive_price_and_size_are_accepted(value: str) -> None:
    fill = parse_fill(message({"price": value, "size": value}))
    assert (fill.price, fill.size) == (value, value)


@pytest.mark.parametrize("value", [True, False, 0, -1, 2**63, 2**64, 2**70, "81234567", 1.0, 8.1e7])
def test_bad_trade_id_is_rejected(value: object) -> None:
    rejected(message({"trade_id": value}), "trade_id")


@pytest.mark.parametrize("value", [1, MAX_INT64])
def test_trade_id_bounds_are_accepted(value: int) -> None:
    assert parse_fill(message({"trade_id": value})).trade_id == value


@pytest.mark.parametrize("field", ["taker_order_id", "maker_order_id"])
@pytest.mark.parametrize("value", [-1, True, 2**63, "991", 991.0])
def test_bad_order_id_is_rejected(field: str, value: object) -> None:
    rejected(message({field: value}), field)


@pytest.mark.parametrize("field", ["taker_order_id", "maker_order_id"])
@pytest.mark.parametrize("value", [0, MAX_INT64])
def test_order_id_bounds_are_accepted(field: str, value: int) -> None:
    fill = parse_fill(message({field: value}))
    assert getattr(fill, field) == value


@pytest.mark.parametrize("value", [1763985600123.0, 1.763985600123e12, "1763985600123", True])
def test_timestamp_must_be_an_integer(value: object) -> None:
    rejected(message({"timestamp": value}), "timestamp")


def test_timestamp_is_kept_in_milliseconds() -> None:
    assert parse_fill(message({"timestamp": 1})).timestamp_ms == 1
    assert parse_fill(message({"timestamp": 1763985600999})).timestamp_ms == 1763985600999


# --- symbols ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symbol",
    [
        "btc-20260331-100000-c",
        "btc-perp",
        "Btc-PERP",
        "BTC-20260331-100000",
        "BTC-20260331-100000-X",
        "BTC-20260331-C",
        "BTC-20261332-100000-C",
        "BTC-20260230-100000-C",
        "BTC-20250229-100000-C",
        "BTC-00000101-100000-C",
        "BTC-2026031-100000-C",
        "BTC-PERPX",
        "BTC-PERP-C",
        "BTC",
        "",
        "-PERP",
        "BTC--PERP",
        " BTC-PERP",
        "BTC-PERP\n",
        "BTC-20260331--100000-C",
        "BTC-20260331-1e5-C",
        "BTC-\u0662\u0660\u0662\u0666\u0660\u0663\u0663\u0661-100000-C",
    ],
)
def test_bad_symbol_is_rejected(symbol: str) -> None:
    rejected(message({"symbol": symbol}), "symbol")


@pytest.mark.parametrize("symbol", [123, ["BTC-PERP"], {"s": "BTC-PERP"}, True])
def test_symbol_not_a_string_is_rejected(symbol: object) -> None:
    rejected(message({"symbol": symbol}), "symbol")


@pytest.mark.parametrize(
    "symbol",
    [
        "BTC-20260331-100000-C",
        "ETH-20260301-5000-P",
        "BTC-PERP",
        "ETH-PERP",
        "BTC-20260331-100000.5-C",
        "SOL-20240229-150-P",
        "1000PEPE-PERP",
    ],
)
def test_valid_symbol_is_accepted_as_is(symbol: str) -> None:
    assert parse_fill(message({"symbol": symbol})).symbol == symbol


# --- wallets ------------------------------------------------------------------------------------

BAD_WALLETS = [
    "0x" + "1" * 39,
    "0x" + "1" * 41,
    "1" * 40,
    "1" * 42,
    "0x" + "g" * 40,
    "0x" + "1" * 39 + "z",
    "0x",
    "",
    " 0x" + "1" * 40,
    "0x" + "1" * 40 + "\n",
    "0x" + "\uff11" * 40,
    1234,
    True,
    ["0x" + "1" * 40],
]


@pytest.mark.parametrize("field", ["taker_wallet_address", "maker_wallet_address"])
@pytest.mark.parametrize("wallet", BAD_WALLETS)
def test_bad_wallet_is_rejected(field: str, wallet: object) -> None:
    rejected(message({field: wallet}), field)


@pytest.mark.parametrize("wallet", BAD_WALLETS)
def test_bad_builder_code_address_is_rejected(wallet: object) -> None:
    rejected(message({"builder_code_address": wallet}), "builder_code_address")


# --- taker_side and is_taker --------------------------------------------------------------------


@pytest.mark.parametrize(
    "side", ["Hold", None, 1, True, "", "B", "Buy ", " Sell", "Buyy", "Kuy", "\u017fell", ["Buy"]]
)
def test_bad_taker_side_is_rejected(side: object) -> None:
    rejected(message({"taker_side": side}), "taker_side")


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [True]])
def test_is_taker_must_be_a_boolean_when_present(value: object) -> None:
    rejected(message({"is_taker": value}), "is_taker")


def test_is_taker_absent_is_accepted() -> None:
    assert parse_fill(message({"is_taker": DELETE})) == parse_fill(EXAMPLE)


# --- accounting shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("accounting", [["0.38", "-0.05"], "0.38", 0.38, True])
def test_accounting_not_an_object_is_rejected(accounting: object) -> None:
    rejected(message(accounting=accounting), "accounting")


@pytest.mark.parametrize("missing", ["taker_fee", "maker_fee"])
def test_accounting_missing_a_fee_is_rejected(missing: str) -> None:
    accounting = dict(EXAMPLE["accounting"])
    del accounting[missing]
    rejected(message(accounting=accounting), missing)


def test_empty_accounting_object_is_rejected() -> None:
    rejected(message(accounting={}))


# --- message shape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b"[]", b'[{"type": "OrderFilled"}]', b'"OrderFilled"', b"42", b"-1.5", b"null", b"true"],
)
def test_non_object_message_is_rejected(line: bytes) -> None:
    rejected(line, "message")


@pytest.mark.parametrize("kind", [5, None, True, ["OrderFilled"], {"name": "OrderFilled"}])
def test_type_not_a_string_is_rejected(kind: object) -> None:
    rejected(message(type=kind), "type")


def test_missing_type_is_rejected() -> None:
    rejected(message(type=DELETE), "type")


@pytest.mark.parametrize("fill", [DELETE, None, [], "fill", 5])
def test_missing_or_non_object_fill_is_rejected(fill: object) -> None:
    rejected(message(fill=fill), "fill")


@pytest.mark.parametrize("line", [b"", "", b" ", b"\t", b"\r", b"  \t  "])
def test_empty_line_is_rejected(line: bytes | str) -> None:
    rejected(line)


@pytest.mark.parametrize(
    "line",
    [
        b"\xff\xfe",
        b"\xc3\x28",
        b"\xed\xa0\x80",  # an encoded surrogate
        encode(EXAMPLE).replace(b"BTC-20260331", b"BTC-\xff0260331"),
        encode(EXAMPLE).replace(b"OrderFilled", b"Order\xc0\xafFilled"),
    ],
)
def test_invalid_utf8_is_rejected(line: bytes) -> None:
    reason = rejected(line)
    assert "utf-8" in reason.lower()


@pytest.mark.parametrize("kind", ["OrderFilled", "Heartbeat"])
def test_invalid_utf8_in_an_ignored_field_is_rejected(kind: str) -> None:
    line = encode(message(type=kind, extra="PLACEHOLDER")).replace(b"PLACEHOLDER", b"\xff\xfe")
    assert type(parse_checked(line)) is Reject
    assert type(parse_line(line)) is Reject


@pytest.mark.parametrize(
    "line",
    [
        b"{",
        b"}",
        b"{'type': 'OrderFilled'}",
        b'{"type": "OrderFilled",}',
        b'{"type": "OrderFilled" "fill": {}}',
        b"{type: OrderFilled}",
        b"NaN",
        encode(EXAMPLE)[:-1],
        encode(EXAMPLE)[: len(encode(EXAMPLE)) // 2],
        encode(EXAMPLE) + b"garbage",
        encode(EXAMPLE) + b"{}",
        encode(EXAMPLE) + b"\n" + encode(EXAMPLE),
        encode(EXAMPLE).replace(b'"1520.5"', b'"1520.5\x00"'),
        encode(EXAMPLE).replace(b'"1520.5"', b'"\\q1520.5"'),
        encode(EXAMPLE).replace(b"81234567", b"081234567"),
        b"\xef\xbb\xbf" + encode(EXAMPLE),
    ],
)
def test_invalid_json_is_rejected(line: bytes) -> None:
    rejected(line)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_top_level_deep_nesting_is_rejected(opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    rejected(opener * 5000 + closer * 5000)


def test_deep_nesting_in_an_ignored_field_does_not_raise() -> None:
    line = encode(message(extra="PLACEHOLDER")).replace(b'"PLACEHOLDER"', b"[" * 5000 + b"]" * 5000)
    # Ignored fields are ignored, but a parser may refuse this depth: either way it must not raise.
    assert type(parse_line(line)) in (Fill, Reject)


def test_one_megabyte_line_with_an_ignored_field_is_a_fill() -> None:
    line = encode(message(padding="x" * 1_000_000))
    assert len(line) > 1_000_000
    assert parse_line(line) == parse_fill(EXAMPLE)


@pytest.mark.parametrize(
    "field",
    ["symbol", "price", "taker_side", "taker_wallet_address", "builder_code_fee", "source.type"],
)
def test_one_megabyte_bad_value_is_rejected_with_a_short_reason(field: str) -> None:
    huge = "Z" * 1_000_000
    if field == "source.type":
        msg = message({"source": {"type": huge}})
    else:
        msg = message({field: huge})
    reason = rejected(msg, field)
    assert len(reason) < 10_000


def test_one_megabyte_of_garbage_is_rejected() -> None:
    rejected(b"{" + b"\x01garbage" * 131_072)


# --- never raises -------------------------------------------------------------------------------

ODD_UNICODE = [
    "\u0000",
    "\u200b",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "\u0301",
    "\uffff",
    "\ud800",
    "\udfff",
    "\u212a",
    "\u0130",
    "\uff11",
    "\n",
    '"',
    "\\",
]
TYPE_SWAPS: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**64,
    -(2**63),
    "",
    "x",
    "NaN",
    [],
    {},
    [None],
    {"type": "OrderFilled"},
    "0x" + "A" * 40,
    "BTC-PERP",
]
EXTRA_BASE = message(note="ignored text")


def _mutate_structure(rng: random.Random) -> bytes:
    msg = copy.deepcopy(rng.choice([EXAMPLE, EXTRA_BASE]))
    for _ in range(rng.randint(1, 3)):
        fill = msg.get("fill")
        target = rng.choice([msg, fill, fill, msg.get("accounting")])
        if not isinstance(target, dict) or not target:
            continue
        key = rng.choice(sorted(target))
        action = rng.randrange(4)
        if action == 0:
            del target[key]
        elif action == 1:
            target[key] = copy.deepcopy(rng.choice(TYPE_SWAPS))
        elif action == 2:
            value = target[key]
            text = value if isinstance(value, str) else json.dumps(value)
            at = rng.randint(0, len(text))
            target[key] = text[:at] + rng.choice(ODD_UNICODE) + text[at:]
        else:
            value = target[key]
            if isinstance(value, str):
                target[key] = rng.choice(
                    [value.upper(), value.lower(), value.swapcase(), value * 2]
                )
            else:
                target[key] = {"wrapped": value}
    text = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogatepass")


def _mutate_bytes(rng: random.Random) -> bytes:
    line = bytearray(encode(rng.choice([EXAMPLE, EXTRA_BASE])))
    action = rng.randrange(5)
    if action == 0:
        del line[rng.randint(0, len(line)) :]
    elif action == 1:
        for _ in range(rng.randint(1, 4)):
            line[rng.randrange(len(line))] = rng.randrange(256)
    elif action == 2:
        at = rng.randrange(len(line))
        line[at:at] = rng.choice(ODD_UNICODE).encode("utf-8", "surrogatepass")
    elif action == 3:
        start = rng.randrange(len(line))
        del line[start : start + rng.randint(1, 20)]
    else:
        at = rng.randrange(len(line))
        line[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(line)


def _check_fill_invariants(fill: Fill) -> None:
    wallet = re.compile(r"0x[0-9a-f]{40}")
    assert 1 <= fill.trade_id <= MAX_INT64
    assert 0 <= fill.taker_order_id <= MAX_INT64 and 0 <= fill.maker_order_id <= MAX_INT64
    assert fill.taker_side in ("Buy", "Sell")
    assert wallet.fullmatch(fill.taker_wallet) and wallet.fullmatch(fill.maker_wallet)
    assert fill.builder_code_address is None or wallet.fullmatch(fill.builder_code_address)
    assert Decimal(fill.price) > 0 and Decimal(fill.size) > 0
    assert Decimal(fill.taker_fee).is_finite() and Decimal(fill.maker_fee).is_finite()
    assert type(fill.timestamp_ms) is int and fill.timestamp_ms >= 0
    assert fill.source_type and fill.source_type.isprintable()


def test_parse_line_never_raises_on_mutated_lines() -> None:
    rng = random.Random(20260331)
    seen: dict[str, int] = {"Fill": 0, "Reject": 0, "SKIPPED": 0}
    for i in range(4000):
        line = _mutate_structure(rng) if i % 2 else _mutate_bytes(rng)
        for candidate in (line, line.decode("utf-8", "surrogateescape")):
            try:
                result = parse_line(candidate)
            except Exception as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"parse_line raised {exc!r} on {candidate[:200]!r}")
            if type(result) is Fill:
                seen["Fill"] += 1
                _check_fill_invariants(result)
            elif type(result) is Reject:
                seen["Reject"] += 1
                assert isinstance(result.reason, str) and result.reason
            else:
                assert result is SKIPPED, result
                seen["SKIPPED"] += 1
    # The mutations exercise every outcome, not only rejects.
    assert all(count > 50 for count in seen.values()), seen


def test_fast_and_checked_paths_agree_on_mutated_utf8_lines() -> None:
    """parse_line (fast path first) decides exactly as the rule-by-rule parse_checked."""
    rng = random.Random(7)
    compared = 0
    for i in range(3000):
        line = _mutate_structure(rng) if i % 2 else _mutate_bytes(rng)
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            continue  # see test_invalid_utf8_in_an_ignored_field_is_rejected
        compared += 1
        assert parse_line(line) == parse_checked(line), line[:300]
    assert compared > 1000


def test_parse_line_never_raises_on_arbitrary_bytes_and_text() -> None:
    rng = random.Random(99)
    alphabet = '{}[]":,0123456789.-+eE \\tnu' + "".join(ODD_UNICODE)
    for _ in range(3000):
        size = rng.randint(0, 200)
        raw = rng.randbytes(size)
        text = "".join(rng.choice(alphabet) for _ in range(size))
        for line in (raw, text, text.encode("utf-8", "surrogatepass")):
            result = parse_line(line)
            assert type(result) in (Fill, Reject) or result is SKIPPED


@pytest.mark.parametrize("kind", ["orderfilled", "ORDERFILLED", "Orderfilled"])
def test_a_fill_type_in_other_letter_case_is_rejected_not_skipped(kind: str) -> None:
    line = encode(message(type=kind))
    assert "only in letter case" in rejected(line)
    assert parse_checked(line) == parse_line(line)
