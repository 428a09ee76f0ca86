"""The engine simulator writes what the contract promises, so the demo and benchmarks are honest.

No database here: every check reads the files back and parses them with the pipeline's own parser.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from competition_pipeline.fills.contract import SKIPPED, Fill, Reject, parse_line
from competition_pipeline.fills.journal import SEGMENT, window_dir
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.tools import cli, simulate
from competition_pipeline.tools.simulate.messages import _fixed

WINDOW = Window.from_key("2026-11-20-03:00")


def segment_lines(path: Path) -> list[bytes]:
    """A segment's lines; asserts the layout's promises (gzip when closed, whole lines)."""
    raw = path.read_bytes()
    data = gzip.decompress(raw) if path.name.endswith(".gz") else raw
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends with an incomplete line"
    return data.splitlines()


def hour_lines(root: Path, window: Window) -> list[bytes]:
    directory = window_dir(root, window)
    names = sorted(p.name for p in directory.iterdir())
    assert all(SEGMENT.fullmatch(name) for name in names), names
    return [line for name in names for line in segment_lines(directory / name)]


def parsed(lines: list[bytes]) -> tuple[list[Fill], int]:
    """The fills and the count of skipped messages; any reject fails the test."""
    fills, skipped = [], 0
    for line in lines:
        result = parse_line(line)
        assert not isinstance(result, Reject), (result, line[:200])
        if result is SKIPPED:
            skipped += 1
        else:
            assert type(result) is Fill
            fills.append(result)
    return fills, skipped


def rows(fills: list[Fill]) -> int:
    return sum(1 if f.taker_wallet == f.maker_wallet else 2 for f in fills)


def test_every_line_is_a_contract_conformant_message(tmp_path: Path) -> None:
    sim = simulate.FillSimulator(seed=11, trade_id_base=500)
    stats = simulate.write_hour(tmp_path, WINDOW, 4_000, segments=3, sim=sim)

    directory = tmp_path / "date=2026-11-20" / "hour=03"
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["seg-00001.jsonl.gz", "seg-00002.jsonl.gz", "seg-00003.jsonl"]
    assert list(stats.segments) == names
    lines = hour_lines(tmp_path, WINDOW)
    fills, skipped = parsed(lines)

    # The returned counts are what is on disk.
    assert stats.fills == len(fills) == 4_000
    assert stats.others == skipped > 0
    assert stats.lines == len(lines) == stats.fills + stats.others
    assert stats.rows_expected == rows(fills)
    assert stats.self_trades == sum(f.taker_wallet == f.maker_wallet for f in fills)
    assert stats.bytes == sum(len(line) + 1 for line in lines)

    # Event time inside the hour it is filed under; trade ids unique, increasing, from the base.
    assert all(WINDOW.contains_ms(f.timestamp_ms) for f in fills)
    ids = [f.trade_id for f in fills]
    assert ids == sorted(set(ids)) and ids[0] == 500 == stats.first_trade_id
    assert stats.last_trade_id == ids[-1] == 4_499 and sim.next_trade_id == 4_500

    # A few thousand fills exercise every case the pipeline has to handle.
    assert stats.self_trades > 0
    assert any(f.maker_fee.startswith("-") for f in fills)  # maker rebates
    assert all(not f.taker_fee.startswith("-") and Decimal(f.taker_fee) > 0 for f in fills)
    assert any(f.builder_code_address and f.builder_code_fee for f in fills)
    assert any(f.builder_code_address is None for f in fills)
    assert {f.source_type for f in fills} == {"orderbook", "rfq", "liquidation"}
    assert any(f.taker_realized_pnl is not None for f in fills)
    assert any(f.taker_realized_pnl is None for f in fills)
    assert any(f.maker_realized_pnl is not None for f in fills)
    assert {f.taker_side for f in fills} == {"Buy", "Sell"}
    assert any(f.symbol.endswith("-PERP") for f in fills)
    assert any(f.symbol.endswith("-C") for f in fills) and any(
        f.symbol.endswith("-P") for f in fills
    )
    assert 10 <= len({f.taker_wallet for f in fills} | {f.maker_wallet for f in fills}) <= 50

    messages = [json.loads(line) for line in lines]
    kinds = {m["type"] for m in messages}
    assert kinds == {"OrderFilled", "OrderPlaced", "OrderCancelled", "Heartbeat"}
    raw_fills = [m for m in messages if m["type"] == "OrderFilled"]
    assert any("accounting" in m for m in raw_fills) and any(
        "accounting" not in m for m in raw_fills
    )
    assert any("source" not in m["fill"] for m in raw_fills)  # absent means orderbook
    wallets = [m["fill"]["taker_wallet_address"] for m in raw_fills]
    assert all(w != w.lower() and w != "0x" + w[2:].upper() for w in wallets)  # mixed case
    for m in raw_fills:
        for key in ("price", "size", "fee"):
            assert type(m["fill"][key]) is str and Decimal(m["fill"][key]) >= 0
    # Notional is exact: the fee is a whole number of basis points of price * size.
    for m in raw_fills[:200]:
        notional = Decimal(m["fill"]["price"]) * Decimal(m["fill"]["size"])
        assert (Decimal(m["fill"]["fee"]) / notional * 10_000) % 1 == 0


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    def write(name: str, seed: int) -> dict[str, bytes]:
        root = tmp_path / name
        sim = simulate.FillSimulator(seed=seed, trade_id_base=1)
        simulate.write_hour(root, WINDOW, 3_000, segments=3, sim=sim)
        directory = window_dir(root, WINDOW)
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}

    first = write("a", 3)
    assert write("b", 3) == first  # gzip bytes too: no mtime or file name in the header
    assert write("c", 4) != first
    # The default simulator is seeded by the hour: the same hour is the same bytes.
    for name in ("d", "e"):
        simulate.write_hour(tmp_path / name, WINDOW, 500)
    assert hour_lines(tmp_path / "d", WINDOW) == hour_lines(tmp_path / "e", WINDOW)


def test_gzip_segments_are_closed_and_plain_segment_is_last(tmp_path: Path) -> None:
    stats = simulate.write_hour(tmp_path, WINDOW, 1_000, segments=4)
    directory = window_dir(tmp_path, WINDOW)
    assert stats.segments[-1] == "seg-00004.jsonl"
    for name in stats.segments[:-1]:
        with gzip.open(directory / name, "rb") as handle:
            assert handle.read().endswith(b"\n")
    assert not any(p.name.startswith(".") for p in directory.iterdir())  # no temp left behind

    plain = simulate.write_hour(tmp_path / "plain", WINDOW, 1_000, compress_closed=False)
    assert plain.segments == ("seg-00001.jsonl", "seg-00002.jsonl")
    assert len(parsed(hour_lines(tmp_path / "plain", WINDOW))[0]) == 1_000


def test_a_second_write_adds_segments_and_hours_never_share_trade_ids(tmp_path: Path) -> None:
    sim = simulate.FillSimulator(seed=5)
    first = simulate.write_hour(tmp_path, WINDOW, 300, sim=sim)
    second = simulate.write_hour(tmp_path, WINDOW, 300, sim=sim)
    assert first.segments == ("seg-00001.jsonl.gz", "seg-00002.jsonl")
    assert second.segments == ("seg-00003.jsonl.gz", "seg-00004.jsonl")
    ids = [f.trade_id for f in parsed(hour_lines(tmp_path, WINDOW))[0]]
    assert len(ids) == 600 and ids == sorted(set(ids))

    # Default simulators: each hour owns its own trade-id range.
    later = Window(WINDOW.start + HOUR)
    simulate.write_hour(tmp_path / "d", WINDOW, 400)
    simulate.write_hour(tmp_path / "d", later, 400)
    a = {f.trade_id for f in parsed(hour_lines(tmp_path / "d", WINDOW))[0]}
    b = {f.trade_id for f in parsed(hour_lines(tmp_path / "d", later))[0]}
    assert len(a) == len(b) == 400 and not a & b


def test_hours_share_one_wallet_population_so_wallets_trade_across_hours(tmp_path: Path) -> None:
    later = Window(WINDOW.start + HOUR)
    simulate.write_hour(tmp_path, WINDOW, 300)
    simulate.write_hour(tmp_path, later, 300)

    def wallets(window: Window) -> set[str]:
        fills = parsed(hour_lines(tmp_path, window))[0]
        return {f.taker_wallet for f in fills} | {f.maker_wallet for f in fills}

    assert len(wallets(WINDOW) & wallets(later)) >= 10
    # Another population is other traders; the trades of a seed stay its own.
    other = simulate.FillSimulator(seed=1, population_seed=7).wallets
    assert not set(other) & set(simulate.FillSimulator(seed=1).wallets)


def test_until_keeps_the_open_hour_in_the_past(tmp_path: Path) -> None:
    until = WINDOW.start_ms + 600_000
    stats = simulate.write_hour(tmp_path, WINDOW, 1_000, until_ms=until)
    fills, _ = parsed(hour_lines(tmp_path, WINDOW))
    assert stats.fills == 1_000
    assert all(WINDOW.start_ms <= f.timestamp_ms < until for f in fills)
    assert [f.timestamp_ms for f in fills] == sorted(f.timestamp_ms for f in fills)


def test_zero_fills_writes_empty_segments(tmp_path: Path) -> None:
    stats = simulate.write_hour(tmp_path, WINDOW, 0)
    assert (stats.fills, stats.lines, stats.rows_expected) == (0, 0, 0)
    assert hour_lines(tmp_path, WINDOW) == []


def test_fixed_point_strings_are_exact() -> None:
    rng = random.Random(1)
    for _ in range(20_000):
        value = rng.randint(-(10 ** rng.randint(0, 15)), 10 ** rng.randint(0, 15))
        places = rng.randint(0, 10)
        text = _fixed(value, places)
        assert Decimal(text) == Decimal(value).scaleb(-places)
        assert text.lstrip("-")[0].isdigit()


def _live(root: Path, seconds: float, rate: float, **kwargs) -> tuple[simulate.LiveStats, float]:
    stop = threading.Event()
    result: list[simulate.LiveStats] = []
    thread = threading.Thread(
        target=lambda: result.append(
            simulate.append_live(root, rate_per_second=rate, stop=stop, **kwargs)
        )
    )
    thread.start()
    time.sleep(seconds)
    stop.set()
    set_at = time.monotonic()
    thread.join(timeout=5)
    assert not thread.is_alive(), "append_live did not stop when the event was set"
    return result[0], time.monotonic() - set_at


def _current_windows(before_ms: int, after_ms: int) -> set[Window]:
    return {Window.containing_ms(before_ms), Window.containing_ms(after_ms)}


def test_append_live_appends_complete_lines_to_the_current_hour(tmp_path: Path) -> None:
    before = time.time_ns() // 1_000_000
    stats, stopping = _live(tmp_path, 0.3, 2_000)
    after = time.time_ns() // 1_000_000
    assert stopping < 1.0
    assert 100 <= stats.fills <= 2_000 * 0.3 * 1.5 + 10

    # Only the current hour (or two, if the test straddles the hour), only whole lines.
    windows = _current_windows(before, after)
    hours = sorted(tmp_path.glob("date=*/hour=*"))
    assert set(hours) <= {window_dir(tmp_path, w) for w in windows}
    fills, skipped = [], 0
    for window in windows:
        if window_dir(tmp_path, window).exists():
            names = [p.name for p in window_dir(tmp_path, window).iterdir()]
            assert names == ["seg-00001.jsonl"]
            got, skips = parsed(hour_lines(tmp_path, window))
            assert all(window.contains_ms(f.timestamp_ms) for f in got)
            fills += got
            skipped += skips
    assert len(fills) == stats.fills and skipped == stats.others
    assert stats.rows_expected == rows(fills)
    assert all(before <= f.timestamp_ms <= after for f in fills)
    ids = [f.trade_id for f in fills]
    assert ids == sorted(set(ids))
    assert [f.timestamp_ms for f in fills] == sorted(f.timestamp_ms for f in fills)


def test_append_live_continues_the_open_plain_segment(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    window = Window.containing(now)
    sim = simulate.FillSimulator(seed=9)
    now_ms = time.time_ns() // 1_000_000
    simulate.write_hour(tmp_path, window, 100, sim=sim, until_ms=now_ms)
    stats, _ = _live(tmp_path, 0.2, 1_000, sim=sim)
    if Window.containing_ms(time.time_ns() // 1_000_000) != window:
        pytest.skip("the hour turned during the test")
    names = sorted(p.name for p in window_dir(tmp_path, window).iterdir())
    assert names == ["seg-00001.jsonl.gz", "seg-00002.jsonl"]  # appended, no new segment
    fills, _ = parsed(hour_lines(tmp_path, window))
    assert len(fills) == 100 + stats.fills
    ids = [f.trade_id for f in fills]
    assert ids == sorted(set(ids))  # one simulator: ids keep increasing across both writers


def test_append_live_never_continues_an_unterminated_fragment(tmp_path: Path) -> None:
    window = Window.containing(dt.datetime.now(dt.UTC))
    directory = window_dir(tmp_path, window)
    directory.mkdir(parents=True)
    (directory / "seg-00001.jsonl").write_bytes(b'{"type":"Heartbeat","timestamp":1}\n{"type":"Hea')
    _live(tmp_path, 0.2, 500)
    if Window.containing_ms(time.time_ns() // 1_000_000) != window:
        pytest.skip("the hour turned during the test")
    assert (directory / "seg-00001.jsonl").read_bytes().endswith(b'{"type":"Hea')
    assert parsed(segment_lines(directory / "seg-00002.jsonl"))[0]


def test_append_live_rejects_a_non_positive_rate(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        simulate.append_live(tmp_path, rate_per_second=0, stop=threading.Event())


def test_cli_writes_the_requested_hours(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--journal", str(tmp_path), "--hours", "3", "--fills-per-hour", "200", "--seed", "2"]
    assert cli.main(["simulate", *args, "--end-hour", "2026-11-20-05:00"]) == 0
    hours = sorted(f"{p.parent.name}/{p.name}" for p in tmp_path.glob("date=*/hour=*"))
    assert hours == [
        "date=2026-11-20/hour=03",
        "date=2026-11-20/hour=04",
        "date=2026-11-20/hour=05",
    ]
    all_ids: list[int] = []
    for hour in range(3, 6):
        window = Window(WINDOW.start + (hour - 3) * HOUR)
        fills, _ = parsed(hour_lines(tmp_path, window))
        assert len(fills) == 200 and all(window.contains_ms(f.timestamp_ms) for f in fills)
        all_ids += [f.trade_id for f in fills]
    assert all_ids == sorted(set(all_ids))
    err = capsys.readouterr().err
    assert "2026-11-20-04:00: 200 fills" in err and "600 fills" in err


def test_cli_writes_the_open_hour_and_follows(tmp_path: Path) -> None:
    before = time.time_ns() // 1_000_000
    args = ["--journal", str(tmp_path), "--hours", "2", "--fills-per-hour", "3600"]
    assert cli.main(["simulate", *args, "--follow", "--rate", "500", "--duration", "0.3"]) == 0
    after = time.time_ns() // 1_000_000
    current = Window.containing_ms(after)
    previous = Window(Window.containing_ms(before).start - HOUR)
    assert window_dir(tmp_path, previous).is_dir() and window_dir(tmp_path, current).is_dir()
    fills, _ = parsed(hour_lines(tmp_path, current))
    assert fills and all(f.timestamp_ms <= after for f in fills)  # nothing from the future
    assert len(parsed(hour_lines(tmp_path, previous))[0]) >= 3600


def test_running_the_cli_again_never_reuses_a_trade_id(tmp_path: Path) -> None:
    base = ["--journal", str(tmp_path), "--fills-per-hour", "3600", "--follow", "--rate", "300"]
    assert cli.main(["simulate", *base, "--hours", "2", "--duration", "0.2"]) == 0
    assert cli.main(["simulate", *base, "--hours", "4", "--seed", "1", "--duration", "0.2"]) == 0
    ids: list[int] = []
    for hour in sorted(tmp_path.glob("date=*/hour=*")):
        window = Window.from_key(f"{hour.parent.name[5:]}-{hour.name[5:]}:00")
        fills, _ = parsed(hour_lines(tmp_path, window))
        assert all(window.contains_ms(f.timestamp_ms) for f in fills)
        ids += [f.trade_id for f in fills]
    assert len(ids) == len(set(ids)) > 3 * 3600
