"""The engine's messages, as ``contracts/fill-journal.md`` (section 1) describes them.

Mostly ``OrderFilled`` messages with every field of section 1 (with and without ``accounting``,
maker rebates, builder fees, RFQ and liquidation sources, realized PnL on some fills, a few
self-trades) and a small share of other types that the pipeline must skip.

Output is deterministic for a seed, so a benchmark or a failing test can be reproduced byte for
byte. Prices, sizes and fees are integers scaled by a power of ten and printed exactly, so every
decimal string is what a ``NUMERIC`` column will hold (no float rounding in the data).

Hour ``h`` (hours since the epoch) owns the trade ids ``[h * 10**10, (h + 1) * 10**10)``: see
:func:`default_trade_id_base` and :func:`live_trade_id_base`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random

from competition_pipeline.fills.windows import Window

HOUR_MS = 3_600_000
IDS_PER_HOUR = 10**10

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


def default_trade_id_base(window: Window) -> int:
    """The first trade id :func:`write_hour` uses for ``window`` when given no simulator."""
    return (window.start_ms // HOUR_MS) * IDS_PER_HOUR + 1


def live_trade_id_base(now_ms: int) -> int:
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
