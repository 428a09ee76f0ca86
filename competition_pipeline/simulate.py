"""A small simulator of the matching engine's fill journal, per ``contracts/fill-journal.md``.

It writes what the engine writes: ``date=YYYY-MM-DD/hour=HH/`` directories of segments, closed
ones gzip-compressed, the newest plain and growing; mostly ``OrderFilled`` messages (with and
without ``accounting``, rebates, builder fees, RFQ and liquidation sources, realized PnL on some
fills, a few self-trades), and some other message types that the pipeline must skip. Deterministic
for a seed, so the demo and the benchmark are reproducible.

    python -m competition_pipeline.simulate --journal DIR --hours 6 --fills-per-hour 2000 --follow
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from competition_pipeline.sources.journal import window_dir
from competition_pipeline.windows import HOUR, Window

UNDERLYINGS = {"BTC": 100_000, "ETH": 4_000, "SOL": 200}
OTHER_TYPES = ("OrderPlaced", "OrderCancelled", "OrderUpdated", "Heartbeat")


@dataclass
class HourStats:
    lines: int = 0
    fills: int = 0
    other_messages: int = 0
    rows: int = 0  # wallet rows the fills give: 2 each, 1 for a self-trade


class FillSimulator:
    """Engine messages with strictly increasing trade ids, deterministic for a seed."""

    def __init__(self, seed: int = 7, wallets: int = 50, first_trade_id: int = 1) -> None:
        self.rng = random.Random(seed)
        self.wallets = [self._wallet() for _ in range(wallets)]
        self.builders = [self._wallet() for _ in range(3)]
        self.next_trade_id = first_trade_id
        self.next_order_id = 1

    def _wallet(self) -> str:
        digits = f"{self.rng.getrandbits(160):040x}"
        mixed = "".join(c.upper() if c.isalpha() and self.rng.random() < 0.5 else c for c in digits)
        return "0x" + mixed

    def _symbol(self) -> str:
        underlying = self.rng.choice(list(UNDERLYINGS))
        if self.rng.random() < 0.3:
            return f"{underlying}-PERP"
        strike = UNDERLYINGS[underlying] * self.rng.choice((8, 9, 10, 11, 12)) // 10
        expiry = self.rng.choice(("20261225", "20270326", "20260331"))
        return f"{underlying}-{expiry}-{strike}-{self.rng.choice('CP')}"

    def _decimal(self, low: float, high: float, places: int) -> str:
        return f"{self.rng.uniform(low, high):.{places}f}"

    def fill(self, timestamp_ms: int) -> dict:
        rng = self.rng
        taker = rng.choice(self.wallets)
        maker = taker if rng.random() < 0.01 else rng.choice(self.wallets)
        price = self._decimal(1, 5_000, 2)
        size = self._decimal(0.01, 5, 3)
        taker_fee = self._decimal(0.01, 2, 4)
        fill = {
            "trade_id": self.next_trade_id,
            "taker_order_id": self.next_order_id,
            "maker_order_id": self.next_order_id + 1,
            "symbol": self._symbol(),
            "price": price,
            "size": size,
            "fee": taker_fee,
            "taker_side": rng.choice(("Buy", "Sell")),
            "taker_wallet_address": taker,
            "maker_wallet_address": maker,
            "is_taker": True,
            "timestamp": timestamp_ms,
            "builder_code_address": None,
            "builder_code_fee": None,
            "source": {"type": "orderbook"},
            "taker_realized_pnl": None,
            "maker_realized_pnl": None,
            "underlying_notional": self._decimal(100, 100_000, 1),
        }
        self.next_trade_id += 1
        self.next_order_id += 2
        roll = rng.random()
        if roll < 0.05:
            fill["source"] = {"type": "rfq", "rfq_id": rng.randrange(10**6), "quote_id": 7}
        elif roll < 0.07:
            fill["source"] = {"type": "liquidation"}
        if rng.random() < 0.1:
            fill["builder_code_address"] = rng.choice(self.builders)
            fill["builder_code_fee"] = self._decimal(0.001, 0.5, 4)
        if rng.random() < 0.3:
            fill["taker_realized_pnl"] = self._decimal(-500, 500, 2)
        if rng.random() < 0.3:
            fill["maker_realized_pnl"] = self._decimal(-500, 500, 2)
        message: dict = {"type": "OrderFilled", "fill": fill}
        if rng.random() < 0.8:
            maker_fee = self._decimal(-0.2, 0.5, 4)  # negative: a maker rebate
            message["accounting"] = {"taker_fee": taker_fee, "maker_fee": maker_fee}
        return message

    def other(self, timestamp_ms: int) -> dict:
        kind = self.rng.choice(OTHER_TYPES)
        if kind == "Heartbeat":
            return {"type": kind, "timestamp": timestamp_ms}
        return {"type": kind, "order": {"order_id": self.next_order_id, "timestamp": timestamp_ms}}

    def messages(
        self, window: Window, count: int, stats: HourStats
    ) -> Iterator[tuple[bool, bytes]]:
        """``count`` fills (and about 5% other messages) in ``window``, in time order, as
        ``(is_fill, line)``."""
        span = window.end_ms - window.start_ms
        for i in range(count):
            timestamp = window.start_ms + (i * span) // max(count, 1)
            if self.rng.random() < 0.05:
                stats.other_messages += 1
                stats.lines += 1
                yield False, orjson.dumps(self.other(timestamp)) + b"\n"
            message = self.fill(timestamp)
            stats.fills += 1
            stats.lines += 1
            fill = message["fill"]
            self_trade = fill["taker_wallet_address"] == fill["maker_wallet_address"]
            stats.rows += 1 if self_trade else 2
            yield True, orjson.dumps(message) + b"\n"


def write_hour(
    root: str | Path,
    window: Window,
    fills: int,
    *,
    segments: int = 2,
    compress_closed: bool = True,
    sim: FillSimulator | None = None,
) -> HourStats:
    """Write one hour of journal: all segments but the last gzip-compressed (closed)."""
    # Trade ids unique across hours: each hour owns the range start_ms * 1000 + n.
    sim = sim or FillSimulator(seed=window.start_ms, first_trade_id=window.start_ms * 1000)
    directory = window_dir(Path(root), window)
    directory.mkdir(parents=True, exist_ok=True)
    stats = HourStats()
    per_segment = -(-fills // max(segments, 1)) if fills else 0
    lines = sim.messages(window, fills, stats)
    for index in range(1, max(segments, 1) + 1):
        closed = compress_closed and index < segments
        path = directory / f"seg-{index:05d}.jsonl{'.gz' if closed else ''}"
        opener = gzip.open if closed else open
        with opener(path, "wb") as out:  # type: ignore[operator]
            buffer: list[bytes] = []
            written = 0
            for is_fill, line in lines:
                buffer.append(line)
                written += is_fill
                if len(buffer) >= 10_000:
                    out.write(b"".join(buffer))
                    buffer = []
                if written >= per_segment:
                    break
            out.write(b"".join(buffer))
    return stats


def append_live(
    root: str | Path,
    *,
    rate_per_second: float,
    stop: threading.Event,
    sim: FillSimulator | None = None,
) -> HourStats:
    """Append fills to the open hour's plain segment, as the engine does, until ``stop`` is set."""
    # Live trade ids start at the current microsecond: above every id of a closed sample hour.
    sim = sim or FillSimulator(seed=time.time_ns(), first_trade_id=time.time_ns() // 1000)
    stats = HourStats()
    interval = 1.0 / rate_per_second if rate_per_second > 0 else 1.0
    while not stop.is_set():
        now_ms = time.time_ns() // 1_000_000
        window = Window.containing_ms(now_ms)
        directory = window_dir(Path(root), window)
        directory.mkdir(parents=True, exist_ok=True)
        message = sim.fill(now_ms)
        with (directory / "live-00001.jsonl").open("ab") as out:
            out.write(orjson.dumps(message) + b"\n")
        stats.fills += 1
        stats.lines += 1
        stop.wait(interval)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--journal", required=True, type=Path)
    parser.add_argument(
        "--hours", type=int, default=6, help="hours to write, ending with the open one"
    )
    parser.add_argument("--fills-per-hour", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-hour", help="last hour to write, YYYY-MM-DD-HH:00 (default: now)")
    parser.add_argument("--follow", action="store_true", help="then keep appending live fills")
    parser.add_argument("--rate", type=float, default=5.0, help="live fills per second")
    args = parser.parse_args(argv)
    end = (
        Window.from_key(args.end_hour)
        if args.end_hour
        else Window.containing(dt.datetime.now(dt.UTC))
    )
    sim = FillSimulator(seed=args.seed, first_trade_id=end.start_ms * 1000 - 10**9)
    started = time.perf_counter()
    total = 0
    for back in range(args.hours - 1, -1, -1):
        window = Window(end.start - back * HOUR)
        stats = write_hour(args.journal, window, args.fills_per_hour, sim=sim)
        total += stats.fills
        elapsed = time.perf_counter() - started
        print(f"{window.key}: {stats.fills} fills ({elapsed:.1f}s)", file=sys.stderr, flush=True)
    print(f"wrote {total} fills in {args.hours} hours to {args.journal}", file=sys.stderr)
    if args.follow:
        stop = threading.Event()
        print(f"appending {args.rate} fills/s; Ctrl-C to stop", file=sys.stderr)
        try:
            append_live(args.journal, rate_per_second=args.rate, stop=stop, sim=sim)
        except KeyboardInterrupt:
            stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
