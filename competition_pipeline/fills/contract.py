"""The engine message contract (``shared/contracts/fill-journal.md``, section 1) as code.

``parse_line`` turns one journal line (or one stream message) into exactly one of:

* a validated :class:`Fill` (decimals kept as their exact decimal strings, never floats),
* :data:`SKIPPED` for a well-formed message of another type (counted, never rejected),
* a :class:`Reject` carrying the reason.

It never raises on bad input: a line that breaks the contract is a reject with a reason, so one bad
line can never kill the run that records a window of millions of good ones.

Choices where the contract is silent (documented in the README):

* ``is_taker`` is informational: it may be absent; when present it must be a boolean.
* ``fee`` is required (the contract lists it as a decimal string, not nullable).
* ``accounting`` may be absent or ``null``; when it is an object both fees must be decimal strings.
* decimals are ``-?digits[.digits]`` with at most 40 digits on either side of the point, so every
  accepted value fits PostgreSQL's unconstrained NUMERIC exactly.
* ``builder_code_address`` must be a wallet address (stored lowercase) when not null.
* ``source.type`` must be a non-empty string of at most 64 printable characters.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

FILL_TYPE: Final = "OrderFilled"
MAX_INT64: Final = 2**63 - 1
# 9999-12-31T23:59:59.999Z: the largest instant PostgreSQL's timestamptz and Python both hold.
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999

_DECIMAL = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII)
#: A wallet address (0x and 40 hex digits): fills are checked by it, and so are registrations.
WALLET = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)
_SYMBOL = re.compile(
    r"[A-Z0-9]{1,20}-(?:(?P<expiry>[0-9]{8})-[0-9]{1,12}(?:\.[0-9]{1,8})?-[CP]|PERP)", re.ASCII
)
_SOURCE_TYPE = re.compile(r"[\x21-\x7e]{1,64}", re.ASCII)


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One validated ``OrderFilled`` message: wallets lowercase, decimals as exact strings.

    A frozen msgspec struct rather than a dataclass: built once per fill, it costs a tenth."""

    trade_id: int
    taker_order_id: int
    maker_order_id: int
    symbol: str
    price: str
    size: str
    taker_side: str  # "Buy" | "Sell"
    taker_wallet: str
    maker_wallet: str
    timestamp_ms: int
    taker_fee: str
    maker_fee: str
    builder_code_address: str | None
    builder_code_fee: str | None
    source_type: str
    taker_realized_pnl: str | None
    maker_realized_pnl: str | None
    underlying_notional: str | None


#: Every reject rule: a reject's reason starts with one of these and a colon (or is "empty line").
#: A closed set, so that what the exporter labels by rule can never grow with the input.
REJECT_RULES: Final = (
    "empty line",
    "invalid UTF-8",
    "invalid JSON",
    "line too long",
    "misfiled",
    "message",
    "type",
    "fill",
    "is_taker",
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
    "accounting",
    "taker_fee",
    "maker_fee",
    "builder_code_address",
    "builder_code_fee",
    "source",
    "source.type",
    "taker_realized_pnl",
    "maker_realized_pnl",
    "underlying_notional",
)


@dataclass(frozen=True, slots=True)
class Reject:
    """A line that breaks the contract; ``reason`` says which rule, for the quarantine table."""

    reason: str


class _Skipped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Final = _Skipped()
"""A well-formed engine message of another type: skipped and counted, never rejected."""

ParseResult = Fill | Reject | _Skipped


class _Bad(Exception):
    """Internal: a rule was broken; carries the reject reason."""


def _int(obj: dict, key: str, low: int, high: int) -> int:
    if key not in obj:
        raise _Bad(f"{key}: missing")
    value = obj[key]
    # bool is a subclass of int in Python: true/false are not integers in this contract.
    if type(value) is not int:
        raise _Bad(f"{key}: expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise _Bad(f"{key}: {value} is outside {low}..{high}")
    return value


def _decimal(obj: dict, key: str, *, nullable: bool = False, positive: bool = False) -> str | None:
    if key not in obj:
        if nullable:
            return None
        raise _Bad(f"{key}: missing")
    value = obj[key]
    if value is None and nullable:
        return None
    if type(value) is not str:
        raise _Bad(f"{key}: expected a decimal string, got {_kind(value)}")
    if not _DECIMAL.fullmatch(value):
        raise _Bad(f"{key}: {_clip(value)!r} is not a plain decimal string")
    if positive and (value[0] == "-" or not value.strip("0.")):
        raise _Bad(f"{key}: {value} must be greater than 0")
    return value


def _wallet(obj: dict, key: str, *, nullable: bool = False) -> str | None:
    if key not in obj and not nullable:
        raise _Bad(f"{key}: missing")
    value = obj.get(key)
    if value is None and nullable:
        return None
    if type(value) is not str or not WALLET.fullmatch(value):
        raise _Bad(f"{key}: expected 0x + 40 hex digits, got {_show(value)}")
    return value.lower()


def _symbol(value: object) -> str:
    if type(value) is not str:
        raise _Bad(f"symbol: expected a string, got {_kind(value)}")
    match = _SYMBOL.fullmatch(value)
    if match is None:
        raise _Bad(f"symbol: {_clip(value)!r} is neither UNDERLYING-YYYYMMDD-STRIKE-C|P nor -PERP")
    expiry = match.group("expiry")
    if expiry is not None:
        try:
            dt.date(int(expiry[:4]), int(expiry[4:6]), int(expiry[6:]))
        except ValueError:
            raise _Bad(f"symbol: {value!r} has no valid expiry date") from None
    return value


def _side(value: object) -> str:
    if type(value) is str:
        lowered = value.lower()
        if lowered == "buy":
            return "Buy"
        if lowered == "sell":
            return "Sell"
    raise _Bad(f"taker_side: expected Buy or Sell, got {_show(value)}")


def _source_type(value: object) -> str:
    if value is None:
        return "orderbook"
    if type(value) is not dict:
        raise _Bad(f"source: expected an object, got {_kind(value)}")
    kind = value.get("type")
    if type(kind) is not str or not _SOURCE_TYPE.fullmatch(kind):
        raise _Bad(f"source.type: expected a short string, got {_show(kind)}")
    return kind


def _fees(fill: dict, accounting: object) -> tuple[str, str]:
    fee = _decimal(fill, "fee")
    assert fee is not None
    if accounting is None:
        return fee, "0"
    if type(accounting) is not dict:
        raise _Bad(f"accounting: expected an object, got {_kind(accounting)}")
    taker = _decimal(accounting, "taker_fee")
    maker = _decimal(accounting, "maker_fee")
    assert taker is not None and maker is not None
    return taker, maker


def _fill(fill: object, accounting: object) -> Fill:
    if type(fill) is not dict:
        raise _Bad(f"fill: expected an object, got {_kind(fill)}")
    if "is_taker" in fill and type(fill["is_taker"]) is not bool:
        raise _Bad(f"is_taker: expected a boolean, got {_kind(fill['is_taker'])}")
    taker_fee, maker_fee = _fees(fill, accounting)
    return Fill(
        trade_id=_int(fill, "trade_id", 1, MAX_INT64),
        taker_order_id=_int(fill, "taker_order_id", 0, MAX_INT64),
        maker_order_id=_int(fill, "maker_order_id", 0, MAX_INT64),
        symbol=_symbol(fill.get("symbol")),
        price=_decimal(fill, "price", positive=True),  # type: ignore[arg-type]
        size=_decimal(fill, "size", positive=True),  # type: ignore[arg-type]
        taker_side=_side(fill.get("taker_side")),
        taker_wallet=_wallet(fill, "taker_wallet_address"),  # type: ignore[arg-type]
        maker_wallet=_wallet(fill, "maker_wallet_address"),  # type: ignore[arg-type]
        timestamp_ms=_int(fill, "timestamp", 0, MAX_TIMESTAMP_MS),
        taker_fee=taker_fee,
        maker_fee=maker_fee,
        builder_code_address=_wallet(fill, "builder_code_address", nullable=True),
        builder_code_fee=_decimal(fill, "builder_code_fee", nullable=True),
        source_type=_source_type(fill.get("source")),
        taker_realized_pnl=_decimal(fill, "taker_realized_pnl", nullable=True),
        maker_realized_pnl=_decimal(fill, "maker_realized_pnl", nullable=True),
        underlying_notional=_decimal(fill, "underlying_notional", nullable=True),
    )


def parse_line(line: bytes | str) -> ParseResult:
    """Parse one message (without its line terminator). Never raises on bad input.

    Valid lines take the fast path (:func:`_parse_fast`: one typed, validating decode in C); any
    line it does not accept is decided by :func:`parse_checked`, rule by rule, which names the
    reason. The fast path never accepts a line the checked path would reject (tested).
    """
    fast = _parse_fast(line)
    return fast if fast is not None else parse_checked(line)


def parse_checked(line: bytes | str) -> ParseResult:
    """The contract rule by rule, with the reason of the first broken rule."""
    if not line.strip():
        return Reject("empty line")
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        message = json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        return Reject(f"invalid UTF-8: {exc.reason} at byte {exc.start}")
    except (ValueError, RecursionError) as exc:
        return Reject(f"invalid JSON: {exc}")
    if type(message) is not dict:
        return Reject(f"message: expected a JSON object, got {_kind(message)}")
    kind = message.get("type")
    if type(kind) is not str:
        return Reject(f"type: expected a string, got {_show(kind)}")
    if kind != FILL_TYPE:
        if kind.lower() == FILL_TYPE.lower():
            # Never guess: a fill under a misspelt tag would otherwise be skipped, i.e. lost.
            return Reject(f"type: {_show(kind)} differs from {FILL_TYPE!r} only in letter case")
        return SKIPPED
    try:
        return _fill(message.get("fill"), message.get("accounting"))
    except _Bad as bad:
        return Reject(str(bad))


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# The fast path: the same rules, checked in bulk. msgspec decodes into typed structs (types and
# integer ranges checked in C); the string fields are then checked by ONE regular expression over
# their values joined with \x1f (one match instead of a dozen, the largest cost per line). No
# pattern admits a control character, so a value holding the separator cannot shift the fields
# into a false match. An absent optional value is joined as "None", which only the optional
# fields' patterns admit and no other pattern matches; a real "None" there goes to the checked path.
_FAST_ID = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]


class _FastSource(msgspec.Struct):
    type: str


class _FastFill(msgspec.Struct):
    trade_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT64)]
    taker_order_id: _FAST_ID
    maker_order_id: _FAST_ID
    symbol: str
    price: str
    size: str
    fee: str
    taker_side: str
    taker_wallet_address: str
    maker_wallet_address: str
    timestamp: Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)]
    is_taker: bool | msgspec.UnsetType = msgspec.UNSET
    builder_code_address: str | None = None
    builder_code_fee: str | None = None
    source: _FastSource | None = None
    taker_realized_pnl: str | None = None
    maker_realized_pnl: str | None = None
    underlying_notional: str | None = None


class _FastAccounting(msgspec.Struct):
    taker_fee: str
    maker_fee: str


class _FastMessage(msgspec.Struct):
    type: str
    fill: _FastFill | None = None
    accounting: _FastAccounting | None = None


def _optional(pattern: re.Pattern[str]) -> str:
    return f"(?:{pattern.pattern}|None)"


# The order of _fast_values(): symbol, price, size, fee, the two wallets, the builder code,
# its fee, both PnLs, the underlying notional, the accounting fees, the source type.
_FAST_FIELDS = re.compile(
    "\x1f".join(
        [
            _SYMBOL.pattern.replace("?P<expiry>", "?:"),
            *[_DECIMAL.pattern] * 3,
            *[WALLET.pattern] * 2,
            _optional(WALLET),
            *[_optional(_DECIMAL)] * 6,
            _SOURCE_TYPE.pattern,
        ]
    ),
    re.ASCII,
)
_NONE = "None"


_FAST_DECODER = msgspec.json.Decoder(_FastMessage)
_SIDES = {"buy": "Buy", "sell": "Sell"}
_VALID_SYMBOLS: dict[str, bool] = {}  # symbols are few; the cache is cleared if it ever is not


def _symbol_ok(symbol: str) -> bool:
    """The expiry date of an option symbol is a real date (the pattern was checked in C)."""
    valid = _VALID_SYMBOLS.get(symbol)
    if valid is None:
        try:
            _symbol(symbol)
            valid = True
        except _Bad:
            valid = False
        if len(_VALID_SYMBOLS) > 100_000:
            _VALID_SYMBOLS.clear()
        _VALID_SYMBOLS[symbol] = valid
    return valid


def _parse_fast(line: bytes | str) -> Fill | _Skipped | None:
    """A valid message, or None when the checked path must decide (and name the reason)."""
    if isinstance(line, bytes) and not line.isascii():
        try:
            line.decode("utf-8")  # msgspec does not check UTF-8 inside the fields it skips
        except UnicodeDecodeError:
            return None
    try:
        message = _FAST_DECODER.decode(line)
    except Exception:  # noqa: BLE001 (any failure, e.g. invalid UTF-8: the checked path decides)
        return None
    if message.type != FILL_TYPE:
        return None if message.type.lower() == "orderfilled" else SKIPPED
    fill = message.fill
    if fill is None:
        return None
    accounting = message.accounting
    source = fill.source
    values = (
        fill.symbol,
        fill.price,
        fill.size,
        fill.fee,
        fill.taker_wallet_address,
        fill.maker_wallet_address,
        fill.builder_code_address,
        fill.builder_code_fee,
        fill.taker_realized_pnl,
        fill.maker_realized_pnl,
        fill.underlying_notional,
        accounting.taker_fee if accounting is not None else None,
        accounting.maker_fee if accounting is not None else None,
        source.type if source is not None else "orderbook",
    )
    if _NONE in values or _FAST_FIELDS.fullmatch("\x1f".join(map(str, values))) is None:
        return None
    side = _SIDES.get(fill.taker_side.lower())
    price, size = fill.price, fill.size
    if (
        side is None
        or price[0] == "-"
        or size[0] == "-"
        or not price.strip("0.")
        or not size.strip("0.")
        or not _symbol_ok(fill.symbol)
    ):
        return None
    if accounting is None:
        taker_fee, maker_fee = fill.fee, "0"
    else:
        taker_fee, maker_fee = accounting.taker_fee, accounting.maker_fee
    builder = fill.builder_code_address
    return Fill(
        trade_id=fill.trade_id,
        taker_order_id=fill.taker_order_id,
        maker_order_id=fill.maker_order_id,
        symbol=fill.symbol,
        price=price,
        size=size,
        taker_side=side,
        taker_wallet=fill.taker_wallet_address.lower(),
        maker_wallet=fill.maker_wallet_address.lower(),
        timestamp_ms=fill.timestamp,
        taker_fee=taker_fee,
        maker_fee=maker_fee,
        builder_code_address=builder.lower() if builder is not None else None,
        builder_code_fee=fill.builder_code_fee,
        source_type=source.type if source is not None else "orderbook",
        taker_realized_pnl=fill.taker_realized_pnl,
        maker_realized_pnl=fill.maker_realized_pnl,
        underlying_notional=fill.underlying_notional,
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: object) -> str:
    if type(value) is str:
        return repr(_clip(value))
    if value is None or type(value) in (bool, int, float):
        return repr(value)
    return _kind(value)
