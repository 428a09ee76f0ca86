"""Build journal lines and segments by hand, so tests know the exact answer."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

from competition_pipeline.fills.contract import Fill
from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.windows import Window

W1 = "0x1111111111111111111111111111111111111111"
W2 = "0x2222222222222222222222222222222222222222"
W3 = "0x3333333333333333333333333333333333333333"
W4 = "0xAbCdEf0000000000000000000000000000000004"

#: The window most tests record, and its first millisecond.
KEY = "2026-11-20-03:00"
WINDOW = Window.from_key(KEY)
T0 = WINDOW.start_ms

#: The contract's example message (fill-journal.md, section 1), verbatim: taker W1, maker W2.
EXAMPLE: dict[str, Any] = {
    "type": "OrderFilled",
    "fill": {
        "trade_id": 81234567,
        "taker_order_id": 991,
        "maker_order_id": 774,
        "symbol": "BTC-20260331-100000-C",
        "price": "1520.5",
        "size": "0.25",
        "fee": "0.38",
        "taker_side": "Buy",
        "taker_wallet_address": W1,
        "maker_wallet_address": W2,
        "is_taker": True,
        "timestamp": 1763985600123,
        "builder_code_address": None,
        "builder_code_fee": None,
        "source": {"type": "orderbook"},
        "taker_realized_pnl": "-12.5",
        "maker_realized_pnl": None,
        "underlying_notional": "24375.0",
    },
    "accounting": {"taker_fee": "0.38", "maker_fee": "-0.05"},
}

#: What the contract's example parses into, field by field.
EXAMPLE_FILL = Fill(
    trade_id=81234567,
    taker_order_id=991,
    maker_order_id=774,
    symbol="BTC-20260331-100000-C",
    price="1520.5",
    size="0.25",
    taker_side="Buy",
    taker_wallet=W1,
    maker_wallet=W2,
    timestamp_ms=1763985600123,
    taker_fee="0.38",
    maker_fee="-0.05",
    builder_code_address=None,
    builder_code_fee=None,
    source_type="orderbook",
    taker_realized_pnl="-12.5",
    maker_realized_pnl=None,
    underlying_notional="24375.0",
)


def fill(trade_id: int, timestamp_ms: int, **fields: Any) -> dict[str, Any]:
    """The contract's example as fill ``trade_id`` at ``timestamp_ms``; ``fields`` override fill
    fields (``accounting=None`` drops it)."""
    message = copy.deepcopy(EXAMPLE)
    message["fill"].update(trade_id=trade_id, timestamp=timestamp_ms)
    if "accounting" in fields:
        accounting = fields.pop("accounting")
        if accounting is None:
            del message["accounting"]
        else:
            message["accounting"] = accounting
    message["fill"].update(fields)
    return message


def line(message: dict[str, Any] | str) -> str:
    return message if isinstance(message, str) else json.dumps(message)


def write_segment(
    root: Path,
    window: Window,
    name: str,
    messages: list[dict[str, Any] | str],
    *,
    tail: str = "",
) -> Path:
    """Write a segment; ``.gz`` names are gzip-compressed; ``tail`` is an unterminated fragment."""
    directory = window_dir(root, window)
    directory.mkdir(parents=True, exist_ok=True)
    data = "".join(line(m) + "\n" for m in messages) + tail
    path = directory / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data)
    return path


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def bulk_segment(root: Path, window: Window, count: int, *, first_trade_id: int = 1) -> Path:
    """A plain segment of ``count`` distinct valid fills (2 rows each), written fast."""
    template = json.dumps(fill(0, 0)).replace('"trade_id": 0', '"trade_id": {tid}')
    template = template.replace('"timestamp": 0', '"timestamp": {ts}')
    template = template.replace("{", "{{").replace("}", "}}")
    template = template.replace("{{tid}}", "{tid}").replace("{{ts}}", "{ts}")
    directory = window_dir(root, window)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bulk-{first_trade_id:012d}.jsonl"
    step = max(1, 3_600_000 // max(count, 1))
    with path.open("w") as out:
        for i in range(count):
            out.write(
                template.format(tid=first_trade_id + i, ts=window.start_ms + (i * step) % 3_600_000)
            )
            out.write("\n")
    return path
