"""A stand-in for the matching engine: writes a fill journal as ``contracts/fill-journal.md`` says.

The demo, the tests and the benchmarks need a journal that looks like the engine's (sections 1 and
3): ``date=YYYY-MM-DD/hour=HH/seg-NNNNN.jsonl[.gz]`` segments, closed ones gzip-compressed and the
newest plain and growing; mostly ``OrderFilled`` messages with every field of section 1 (with and
without ``accounting``, maker rebates, builder fees, RFQ and liquidation sources, realized PnL on
some fills, a few self-trades) and a small share of other types that the pipeline must skip.

Output is deterministic for a seed, so a benchmark or a failing test can be reproduced byte for
byte. Prices, sizes and fees are integers scaled by a power of ten and printed exactly, so every
decimal string is what a ``NUMERIC`` column will hold (no float rounding in the data).

Trade ids never collide between the simulators this module creates by default (and the CLI's):
hour ``h`` (hours since the epoch) owns ``[h * 10**10, (h + 1) * 10**10)``; :func:`write_hour`
uses the lower half of its hour and :func:`append_live` the upper half of the hour it starts in,
offset by the millisecond, so restarting the demo never reuses an id with different content.

    python -m competition_pipeline.tools.simulate --journal DIR --hours 6 \
        --fills-per-hour 2000 --follow
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import BinaryIO

from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.tools.progress import Progress, stderr_log

HOUR_MS = 3_600_000
IDS_PER_HOUR = 10**10
SEGMENT_NAME = re.compile(r"seg-([0-9]{5,})\.jsonl(\.gz)?", re.ASCII)
CHUNK_FILLS = 20_000  # lines rendered per write: a few MB, so 1M fills never sit in memory

# Underlying spot prices in cents, option strikes and expiries: a small but realistic universe.
_SPOT_CENTS = {"BTC": 10_000_000, "ETH": 400_000, "SOL": 20_000}
_STRIKES = {
    "BTC": ("80000", "90000", "100000", "110000", "120000", "150000"),
    "ETH": ("3000", "3500", "4000", "4500", "5000"),
    "SOL": ("150", "187.5", "200", "250"),
}
_EXPIRIES = ("20260130", "20260227", "20260331", "20260626", "20261225")
# (price decimal places, size decimal places, largest size in size units) per underlying.
_SCALES = {"BTC": (1, 3, 2_000), "ETH": (2, 2, 5_000), "SOL": (3, 1, 10_000)}
_PERP_SHARE = {"BTC": 0.20, "ETH": 0.12, "SOL": 0.08}  # of all fills; the rest are options

# Shares of fills (each an independent draw) and of other messages.
SELF_TRADE_SHARE = 0.01
ACCOUNTING_SHARE = 0.8
BUILDER_SHARE = 0.15
TAKER_PNL_SHARE = 0.35
MAKER_PNL_SHARE = 0.35
OTHER_SHARE = 0.02  # other message types, as a share of fills


@dataclass(frozen=True, slots=True)
class Batch:
    """Rendered journal lines (``\\n``-terminated) and what they contain."""

    text: str
    fills: int
    others: int
    self_trades: int
    first_trade_id: int | None
    last_trade_id: int | None


@dataclass(frozen=True, slots=True)
class HourStats:
    """What :func:`write_hour` put on disk, so tests and the CLI can check the pipeline's counts."""

    window: Window
    segments: tuple[str, ...]  # file names, in write order
    lines: int
    fills: int
    others: int  # messages of other types (skipped by the pipeline)
    self_trades: int
    rows_expected: int  # competition rows: 2 per fill, 1 per self-trade
    bytes: int  # uncompressed
    first_trade_id: int | None
    last_trade_id: int | None


@dataclass(frozen=True, slots=True)
class LiveStats:
    """What :func:`append_live` appended before it was stopped."""

    lines: int
    fills: int
    others: int
    self_trades: int
    rows_expected: int
    windows: tuple[str, ...]  # keys of the hours appended to
    seconds: float


def default_trade_id_base(window: Window) -> int:
    """The first trade id :func:`write_hour` uses for ``window`` when given no simulator."""
    return (window.start_ms // HOUR_MS) * IDS_PER_HOUR + 1


def _live_trade_id_base(now_ms: int) -> int:
    # Upper half of the hour's range, plus 1000 ids per millisecond into the hour (< 3.6e9).
    return (now_ms // HOUR_MS) * IDS_PER_HOUR + IDS_PER_HOUR // 2 + (now_ms % HOUR_MS) * 1000 + 1


def _fixed(value: int, places: int) -> str:
    """``value / 10**places`` as an exact decimal string (``-?digits.digits``); on the hot path."""
    digits = str(value)
    if places == 0:
        return digits
    sign = ""
    if value < 0:
        sign, digits = "-", digits[1:]
    if len(digits) > places:
        return sign + digits[:-places] + "." + digits[-places:]
    return sign + "0." + digits.rjust(places, "0")


POPULATION_SEED = 20_261_201  # the exchange's traders: the same wallets in every simulated hour


def _checksum_case(hex40: str) -> str:
    """Mixed-case hex like an EIP-55 checksum (sha3-256, not keccak: it only has to look real)."""
    digest = hashlib.sha3_256(hex40.encode()).hexdigest()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(h, 16) >= 8 else c
        for c, h in zip(hex40, digest[:40], strict=True)
    )


def _weighted_table(items: Sequence[object], weights: Sequence[float], size: int) -> list:
    """A lookup table where ``items[i]`` fills a ``weights[i]`` share: O(1) weighted draws."""
    total = sum(weights)
    table: list = []
    acc = 0.0
    for item, weight in zip(items, weights, strict=True):
        acc += weight
        table.extend([item] * (round(acc / total * size) - len(table)))
    table.extend(table[-1:] * (size - len(table)))  # float rounding must not leave a short table
    return table[:size]


class FillSimulator:
    """Engine messages, deterministic for a seed, with strictly increasing trade ids.

    One simulator is one engine: its trade ids and order ids only grow over its life, so several
    hours written with the same simulator never share a trade id. The wallets and builders come
    from ``population_seed``, not ``seed``: one exchange has one set of traders, so hours written
    by differently seeded simulators share their wallets (a competition spans hours).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        trade_id_base: int = 1,
        wallets: int = 50,
        builders: int = 4,
        self_trade_share: float = SELF_TRADE_SHARE,
        other_share: float = OTHER_SHARE,
        population_seed: int = POPULATION_SEED,
    ) -> None:
        if not 1 <= trade_id_base < 2**63 - 1:
            raise ValueError(f"trade_id_base must be in 1..2^63-2, got {trade_id_base}")
        if wallets < 2 or builders < 1:
            raise ValueError("a trade needs at least two wallets, and builder fees one builder")
        self.seed = seed
        self.rng = Random(seed)
        self.next_trade_id = trade_id_base
        self.next_order_id = 1_000 + self.rng.randrange(1_000_000)
        self.self_trade_share = self_trade_share
        self.other_share = other_share
        population = Random(population_seed)
        self.wallets = [
            _checksum_case(f"{population.getrandbits(160):040x}") for _ in range(wallets)
        ]
        self.builders = [
            _checksum_case(f"{population.getrandbits(160):040x}") for _ in range(builders)
        ]
        # A few wallets trade much more than the rest, as on a real leaderboard (Zipf-like).
        self._wallet_table = _weighted_table(
            self.wallets, [1 / (rank + 1) ** 0.8 for rank in range(wallets)], 4096
        )
        self._instrument_table = _weighted_table(*self._instruments(), 4096)

    def _instruments(self) -> tuple[list[tuple], list[float]]:
        """Instrument tuples and their weights; the tuple layout is what ``render`` unpacks.

        ``(symbol, is_perp, base price units, price places, size places, max size units,
        size strings by units, quoted underlying-notional strings by size units)``: the strings
        are tabled once because formatting them per fill is most of the simulator's time.
        """
        instruments: list[tuple] = []
        weights: list[float] = []
        options = sum(len(s) for s in _STRIKES.values()) * len(_EXPIRIES) * 2
        option_weight = (1 - sum(_PERP_SHARE.values())) / options
        for underlying, spot_cents in _SPOT_CENTS.items():
            pp, sp, size_max = _SCALES[underlying]
            sizes = [_fixed(units, sp) for units in range(size_max + 1)]
            notionals = [f'"{_fixed(units * spot_cents, sp + 2)}"' for units in range(size_max + 1)]
            spot_units = spot_cents * 10**pp // 100
            tables = (pp, sp, size_max, sizes, notionals)
            instruments.append((f"{underlying}-PERP", True, spot_units, *tables))
            weights.append(_PERP_SHARE[underlying])
            for expiry in _EXPIRIES:
                for strike in _STRIKES[underlying]:
                    strike_units = int(float(strike) * 10**pp)
                    for kind in "CP":
                        intrinsic = spot_units - strike_units
                        if kind == "P":
                            intrinsic = -intrinsic
                        extrinsic = int(spot_units * (0.005 + 0.05 * self.rng.random()))
                        base = max(intrinsic, 0) + extrinsic
                        symbol = f"{underlying}-{expiry}-{strike}-{kind}"
                        instruments.append((symbol, False, base, *tables))
                        weights.append(option_weight)
        return instruments, weights

    def skip_to(self, trade_id: int) -> None:
        """Continue at ``trade_id`` if that is ahead: ids only ever grow, so they stay unique."""
        self.next_trade_id = max(self.next_trade_id, trade_id)

    def spread(self, low_ms: int, high_ms: int, total: int, start: int, stop: int) -> list[int]:
        """Timestamps ``start..stop`` of ``total`` spread over ``[low_ms, high_ms)``, in order.

        Fill ``i`` falls at a random point of the ``i``-th of ``total`` equal slots, so the
        timestamps never decrease and a caller can render a large hour a chunk at a time.
        """
        if total <= 0 or stop <= start:
            return []
        width = (high_ms - low_ms) / total
        last = high_ms - 1
        rnd = self.rng.random
        return [min(last, low_ms + int((i + rnd()) * width)) for i in range(start, stop)]

    def render(self, timestamps: Sequence[int]) -> Batch:
        """One ``OrderFilled`` line per timestamp, with other messages mixed in before some.

        Built with string formatting rather than a JSON encoder: this loop is the simulator's
        whole cost, and 1,000,000 fills have to be written in seconds.
        """
        rng = self.rng
        rnd = rng.random
        bits = rng.getrandbits
        wallets = self._wallet_table
        instruments = self._instrument_table
        builders = self.builders
        self_share = self.self_trade_share
        other_share = self.other_share
        fixed = _fixed
        out: list[str] = []
        append = out.append
        trade_id = self.next_trade_id
        first = trade_id
        order_id = self.next_order_id
        others = self_trades = 0
        for ts in timestamps:
            if rnd() < other_share:
                append(self._other(ts, order_id))
                others += 1
            symbol, perp, base, pp, sp, size_max, sizes, notionals = instruments[bits(12)]
            price = int(base * (0.95 + 0.1 * rnd())) or 1
            size = int(size_max ** rnd())
            notional = price * size  # places: pp + sp
            np_ = pp + sp
            fee_places = np_ + 4  # fees in basis points of the notional, exactly
            taker_fee = notional * (2 + bits(2))
            fee = fixed(taker_fee, fee_places)
            taker = wallets[bits(12)]
            if rnd() < self_share:
                maker = taker
                self_trades += 1
            else:
                maker = wallets[bits(12)]
                while maker is taker:
                    maker = wallets[bits(12)]
            order_id += 1 + bits(2)
            maker_order = order_id - 1 - bits(12)
            roll = rnd()
            if roll < 0.03:
                source = ""  # absent: orderbook by default (contract, section 1)
            elif roll < 0.85:
                source = '"source":{"type":"orderbook"},'
            elif roll < 0.95:
                source = (
                    f'"source":{{"type":"rfq","rfq_id":{trade_id // 7 + bits(8)},'
                    f'"quote_id":{trade_id // 3 + bits(10)}}},'
                )
            else:
                source = '"source":{"type":"liquidation"},'
            if rnd() < BUILDER_SHARE:
                builder = f'"{builders[bits(8) % len(builders)]}"'
                builder_fee = f'"{fixed(notional * (1 + bits(1)), fee_places)}"'
            else:
                builder = builder_fee = "null"
            if rnd() < TAKER_PNL_SHARE:
                taker_pnl = f'"{fixed(int(notional * (rnd() - 0.5) / 2), np_)}"'
            else:
                taker_pnl = "null"
            if rnd() < MAKER_PNL_SHARE:
                maker_pnl = f'"{fixed(int(notional * (rnd() - 0.5) / 2), np_)}"'
            else:
                maker_pnl = "null"
            roll = rnd()
            if roll < 0.03:
                underlying_notional = "null"
            elif perp:
                underlying_notional = f'"{fixed(notional, np_)}"'
            else:
                underlying_notional = notionals[size]
            roll = rnd()
            if roll < ACCOUNTING_SHARE:
                if roll < 0.08:  # a fee discount: accounting, not `fee`, is what was charged
                    charged = fixed(max(1, taker_fee * 4 // 5), fee_places)
                else:
                    charged = fee
                roll = rnd()
                if roll < 0.4:
                    maker_fee = "-" + fixed(notional, fee_places)  # a 1 bp maker rebate
                elif roll < 0.8:
                    maker_fee = fixed(notional, fee_places)
                else:
                    maker_fee = "0"
                accounting = f',"accounting":{{"taker_fee":"{charged}","maker_fee":"{maker_fee}"}}'
            else:
                accounting = ""
            append(
                f'{{"type":"OrderFilled","fill":{{"trade_id":{trade_id},'
                f'"taker_order_id":{order_id},"maker_order_id":{maker_order},'
                f'"symbol":"{symbol}","price":"{fixed(price, pp)}","size":"{sizes[size]}",'
                f'"fee":"{fee}","taker_side":"{"Buy" if bits(1) else "Sell"}",'
                f'"taker_wallet_address":"{taker}","maker_wallet_address":"{maker}",'
                f'"is_taker":true,"timestamp":{ts},'
                f'"builder_code_address":{builder},"builder_code_fee":{builder_fee},{source}'
                f'"taker_realized_pnl":{taker_pnl},"maker_realized_pnl":{maker_pnl},'
                f'"underlying_notional":{underlying_notional}}}{accounting}}}\n'
            )
            trade_id += 1
        fills = len(timestamps)
        self.next_trade_id = trade_id
        self.next_order_id = order_id
        return Batch(
            text="".join(out),
            fills=fills,
            others=others,
            self_trades=self_trades,
            first_trade_id=first if fills else None,
            last_trade_id=trade_id - 1 if fills else None,
        )

    def _other(self, ts: int, order_id: int) -> str:
        """A message of another type; the contract does not define their fields, only ``type``."""
        rnd = self.rng.random
        roll = rnd()
        if roll < 0.45:
            symbol, _, base, pp, _, size_max, sizes, _ = self._instrument_table[
                self.rng.getrandbits(12)
            ]
            wallet = self._wallet_table[self.rng.getrandbits(12)]
            side = "Buy" if rnd() < 0.5 else "Sell"
            return (
                f'{{"type":"OrderPlaced","order":{{"order_id":{order_id + 1},'
                f'"symbol":"{symbol}","side":"{side}","price":"{_fixed(max(1, base), pp)}",'
                f'"size":"{sizes[int(size_max ** rnd())]}","wallet_address":"{wallet}",'
                f'"timestamp":{ts}}}}}\n'
            )
        if roll < 0.8:
            return f'{{"type":"OrderCancelled","order_id":{order_id},"timestamp":{ts}}}\n'
        return f'{{"type":"Heartbeat","timestamp":{ts}}}\n'


def _segment_numbers(directory: Path) -> list[tuple[int, str]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = SEGMENT_NAME.fullmatch(name)
        if match:
            found.append((int(match.group(1)), name))
    return sorted(found)


def write_hour(
    root: str | os.PathLike[str],
    window: Window,
    fills: int,
    *,
    segments: int = 2,
    compress_closed: bool = True,
    sim: FillSimulator | None = None,
    until_ms: int | None = None,
    compresslevel: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> HourStats:
    """Write ``fills`` fills of ``window`` as ``segments`` segments; all but the last gzipped.

    Segment numbers continue after the ones already in the hour's directory, so a second call
    adds segments instead of rewriting a file a reader may hold open. A gzip segment is written
    under a dot-name and renamed when complete: a closed segment is never seen half-written.
    ``until_ms`` keeps timestamps before that instant (the open hour: nothing from the future).
    Without ``sim``, a simulator seeded by the hour is used, so the same hour is the same bytes.
    ``progress(done, fills)`` is called after every chunk (a large hour takes minutes).
    """
    if fills < 0 or segments < 1:
        raise ValueError("fills must be >= 0 and segments >= 1")
    if sim is None:
        sim = FillSimulator(
            seed=window.start_ms // HOUR_MS, trade_id_base=default_trade_id_base(window)
        )
    low, high = window.start_ms, window.end_ms
    if until_ms is not None:
        high = min(high, max(low + 1, until_ms))
    directory = window_dir(Path(root), window)
    directory.mkdir(parents=True, exist_ok=True)
    existing = _segment_numbers(directory)
    number = existing[-1][0] if existing else 0
    names: list[str] = []
    tally = _Tally()
    for index in range(segments):
        number += 1
        closed = compress_closed and index < segments - 1
        name = f"seg-{number:05d}.jsonl" + (".gz" if closed else "")
        start, stop = fills * index // segments, fills * (index + 1) // segments
        chunks = _chunks(sim, (low, high), fills, start, stop)
        level = compresslevel if closed else None
        _write_segment(directory / name, chunks, tally, fills, progress, gzip_level=level)
        names.append(name)
    return HourStats(
        window=window,
        segments=tuple(names),
        lines=tally.lines,
        fills=fills,
        others=tally.others,
        self_trades=tally.self_trades,
        rows_expected=2 * fills - tally.self_trades,
        bytes=tally.bytes,
        first_trade_id=tally.first_trade_id,
        last_trade_id=tally.last_trade_id,
    )


@dataclass(slots=True)
class _Tally:
    """What an hour's segments hold so far (see :class:`HourStats`)."""

    lines: int = 0
    others: int = 0
    self_trades: int = 0
    bytes: int = 0
    first_trade_id: int | None = None
    last_trade_id: int | None = None

    def add(self, batch: Batch, size: int) -> None:
        self.bytes += size
        self.lines += batch.fills + batch.others
        self.others += batch.others
        self.self_trades += batch.self_trades
        if self.first_trade_id is None:
            self.first_trade_id = batch.first_trade_id
        self.last_trade_id = batch.last_trade_id or self.last_trade_id


def _chunks(
    sim: FillSimulator, span: tuple[int, int], fills: int, start: int, stop: int
) -> Iterator[tuple[Batch, int]]:
    """Fills ``start`` to ``stop`` of the hour's ``fills`` (spread over ``span``, ms), rendered a
    chunk at a time, each with the count of the hour's fills rendered once it is written."""
    for chunk in range(start, stop, CHUNK_FILLS):
        done = min(stop, chunk + CHUNK_FILLS)
        yield sim.render(sim.spread(*span, fills, chunk, done)), done


def _write_segment(
    path: Path,
    chunks: Iterator[tuple[Batch, int]],
    tally: _Tally,
    total: int,
    progress: Callable[[int, int], None] | None,
    *,
    gzip_level: int | None,
) -> None:
    """Write one segment: plain, or gzipped (``gzip_level``) under a dot-name and renamed when
    complete, so that a closed segment is never seen half-written."""
    temp = path if gzip_level is None else path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as raw:
        out: BinaryIO = raw
        if gzip_level is not None:  # no name nor time in the header: the same hour, the same bytes
            out = gzip.GzipFile(
                filename="", fileobj=raw, mode="wb", compresslevel=gzip_level, mtime=0
            )
        with out:
            _write_chunks(out, chunks, tally, total, progress)
    if gzip_level is not None:
        os.replace(temp, path)


def _write_chunks(
    out: BinaryIO,
    chunks: Iterator[tuple[Batch, int]],
    tally: _Tally,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Write rendered chunks to a segment, counting them in ``tally``.

    Compression and disk writes (which release the GIL) run in a thread while the next chunk is
    rendered; at most two chunks wait, so memory stays a few MB whatever the hour's size.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="journal-writer") as writer:
        pending: deque[Future[int]] = deque()
        for batch, done in chunks:
            data = batch.text.encode()
            pending.append(writer.submit(out.write, data))
            while len(pending) > 2:
                pending.popleft().result()
            tally.add(batch, len(data))
            if progress is not None:
                progress(done, total)
        for future in pending:
            future.result()


def _open_live_segment(directory: Path) -> BinaryIO:
    """The hour's newest plain segment to append to, or a new one after the newest segment.

    A plain segment that does not end in ``\\n`` (a writer died mid-line) is left alone: a line
    appended to that fragment would be a reject.
    """
    directory.mkdir(parents=True, exist_ok=True)
    existing = _segment_numbers(directory)
    if existing:
        number, name = existing[-1]
        if not name.endswith(".gz"):
            path = directory / name
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                complete = handle.tell() == 0
                if not complete:
                    handle.seek(-1, os.SEEK_END)
                    complete = handle.read(1) == b"\n"
            if complete:
                return open(path, "ab")
    else:
        number = 0
    return open(directory / f"seg-{number + 1:05d}.jsonl", "ab")


def append_live(
    root: str | os.PathLike[str],
    *,
    rate_per_second: float,
    stop: threading.Event,
    sim: FillSimulator | None = None,
    tick_seconds: float = 0.05,
) -> LiveStats:
    """Append about ``rate_per_second`` fills per second to the open hour until ``stop`` is set.

    Each tick writes the fills due since the last one, timestamped between the last tick and now,
    into the plain segment of the UTC hour of their timestamp (a new hour gets a new directory),
    as whole lines in one write and a flush, so a reader only ever sees an unterminated tail.
    """
    if rate_per_second <= 0:
        raise ValueError(f"rate_per_second must be > 0, got {rate_per_second}")
    started = time.monotonic()
    last_ms = time.time_ns() // 1_000_000
    if sim is None:
        sim = FillSimulator(seed=time.time_ns(), trade_id_base=_live_trade_id_base(last_ms))
    root = Path(root)
    handle: BinaryIO | None = None
    open_window: Window | None = None
    windows: list[str] = []
    written = lines = others = self_trades = 0
    try:
        while not stop.wait(tick_seconds):
            due = int((time.monotonic() - started) * rate_per_second) - written
            if due <= 0:
                continue
            now_ms = max(last_ms, time.time_ns() // 1_000_000)
            stamps = sim.spread(last_ms, now_ms + 1, due, 0, due)
            last_ms = now_ms
            while stamps:
                window = Window.containing_ms(stamps[0])
                part = [t for t in stamps if t < window.end_ms]
                stamps = stamps[len(part) :]
                if window != open_window:
                    if handle is not None:
                        handle.close()
                    handle = _open_live_segment(window_dir(root, window))
                    open_window = window
                    windows.append(window.key)
                batch = sim.render(part)
                handle.write(batch.text.encode())
                handle.flush()
                written += batch.fills
                lines += batch.fills + batch.others
                others += batch.others
                self_trades += batch.self_trades
    finally:
        if handle is not None:
            handle.close()
    return LiveStats(
        lines=lines,
        fills=written,
        others=others,
        self_trades=self_trades,
        rows_expected=2 * written - self_trades,
        windows=tuple(windows),
        seconds=time.monotonic() - started,
    )


_log = stderr_log("simulate")


def _windows(end: Window, hours: int) -> Iterator[Window]:
    for back in range(hours - 1, -1, -1):
        yield Window(end.start - back * HOUR)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition_pipeline.tools.simulate",
        description="Write a simulated engine fill journal (contracts/fill-journal.md).",
    )
    parser.add_argument("--journal", required=True, type=Path, help="journal root directory")
    parser.add_argument("--hours", type=int, default=6, help="hours to write, ending at --end-hour")
    parser.add_argument("--fills-per-hour", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--end-hour", help="last hour, YYYY-MM-DD-HH:00 UTC (default: the current, open hour)"
    )
    parser.add_argument("--segments", type=int, default=2, help="segments per hour")
    parser.add_argument("--follow", action="store_true", help="then keep appending live fills")
    parser.add_argument("--rate", type=float, default=5.0, help="live fills per second")
    parser.add_argument("--duration", type=float, help="stop following after this many seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the ``--hours`` most recent hours of journal; with ``--follow``, keep appending."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.hours < 1 or args.fills_per_hour < 0 or args.segments < 1:
        parser.error("--hours and --segments must be >= 1, --fills-per-hour >= 0")
    if args.follow and args.rate <= 0:
        parser.error("--rate must be > 0")
    try:
        end = (
            Window.from_key(args.end_hour)
            if args.end_hour
            else Window.containing(dt.datetime.now(dt.UTC))
        )
    except ValueError as exc:
        parser.error(str(exc))
    windows = list(_windows(end, args.hours))
    sim = FillSimulator(seed=args.seed, trade_id_base=default_trade_id_base(windows[0]))
    _write_history(args, windows, sim)
    if args.follow:
        _follow(args, sim)
    return 0


def _write_history(args: argparse.Namespace, windows: list[Window], sim: FillSimulator) -> None:
    """Write the hours that have no segments yet (the open hour only up to now)."""
    started = time.perf_counter()
    fills = rows = lines = written = 0
    for window in windows:
        if _segment_numbers(window_dir(args.journal, window)):
            # Rewriting an hour would give its trade ids a second, different content: conflicts.
            _log(f"{window.key}: already has segments, left as it is")
            continue
        # Each hour's fills take ids from that hour's own range, so a later run that writes
        # other hours (or skips some) never reuses an id already on disk.
        sim.skip_to(default_trade_id_base(window))
        now_ms = time.time_ns() // 1_000_000
        count, until = args.fills_per_hour, None
        if window.contains_ms(now_ms):  # the open hour: only what has happened so far
            count = args.fills_per_hour * (now_ms - window.start_ms) // HOUR_MS
            until = now_ms
        stats = write_hour(
            args.journal,
            window,
            count,
            segments=args.segments,
            sim=sim,
            until_ms=until,
            # An hour of more than one chunk takes seconds to minutes: show its way through.
            progress=Progress(window.key, _log) if count > CHUNK_FILLS else None,
        )
        written += 1
        fills += stats.fills
        rows += stats.rows_expected
        lines += stats.lines
        _log(
            f"{window.key}: {stats.fills} fills, {stats.others} other messages, "
            f"{len(stats.segments)} segments ({time.perf_counter() - started:.2f}s)"
        )
    _log(
        f"wrote {written} of {len(windows)} hours to {args.journal}: {fills} fills, {lines} lines, "
        f"{rows} rows expected, next trade id {sim.next_trade_id}, "
        f"{time.perf_counter() - started:.2f}s"
    )


def _follow(args: argparse.Namespace, sim: FillSimulator) -> None:
    """Append live fills in a thread until ``--duration`` ends, Ctrl-C or SIGTERM."""
    # Live ids come from the upper half of the current hour's range, offset by the millisecond,
    # so following again after a restart never reuses the ids of the previous run.
    sim.skip_to(_live_trade_id_base(time.time_ns() // 1_000_000))
    stop = threading.Event()
    result: list[LiveStats] = []
    follower = threading.Thread(
        target=lambda: result.append(
            append_live(args.journal, rate_per_second=args.rate, stop=stop, sim=sim)
        ),
        name="fill-simulator",
        daemon=True,
    )
    _log(f"appending {args.rate:g} fills/s to the open hour; Ctrl-C to stop")
    follower.start()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while follower.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
            follower.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        follower.join(5)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if result:
        live = result[0]
        _log(
            f"appended {live.fills} fills ({live.rows_expected} rows expected) in "
            f"{live.seconds:.1f}s to {', '.join(live.windows) or 'no hour'}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
