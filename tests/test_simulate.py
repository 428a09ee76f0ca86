"""The engine simulator writes what the contract says, and the pipeline records all of it."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

from competition_pipeline import simulate
from competition_pipeline.contract import SKIPPED, Fill, parse_line
from competition_pipeline.windows import Window
from tests.test_asset import materialize, metadata

WINDOW = Window.from_key("2026-11-20-03:00")


def lines_of(directory: Path) -> list[bytes]:
    lines = []
    for path in sorted(directory.iterdir()):
        data = (
            gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        )
        assert data.endswith(b"\n")
        lines.extend(data.splitlines())
    return lines


def test_every_line_is_a_contract_conformant_message(journal: Path) -> None:
    stats = simulate.write_hour(journal, WINDOW, 5_000, segments=3)
    directory = journal / "date=2026-11-20" / "hour=03"
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["seg-00001.jsonl.gz", "seg-00002.jsonl.gz", "seg-00003.jsonl"]
    results = [parse_line(line) for line in lines_of(directory)]
    fills = [r for r in results if type(r) is Fill]
    assert all(type(r) is Fill or r is SKIPPED for r in results)
    assert len(fills) == stats.fills == 5_000 and len(results) == stats.lines
    assert all(WINDOW.contains_ms(f.timestamp_ms) for f in fills)
    assert len({f.trade_id for f in fills}) == len(fills)
    assert any(f.taker_wallet == f.maker_wallet for f in fills)  # self-trades
    assert any(f.maker_fee.startswith("-") for f in fills)  # rebates
    assert any(f.builder_code_fee for f in fills)
    assert {f.source_type for f in fills} == {"orderbook", "rfq", "liquidation"}
    assert stats.rows == sum(1 if f.taker_wallet == f.maker_wallet else 2 for f in fills)


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        simulate.write_hour(tmp_path / name, WINDOW, 500, sim=simulate.FillSimulator(seed=3))
    directory = Path("date=2026-11-20/hour=03")
    assert lines_of(tmp_path / "a" / directory) == lines_of(tmp_path / "b" / directory)


def test_the_pipeline_records_a_simulated_hour_exactly(database_url: str, journal: Path) -> None:
    stats = simulate.write_hour(journal, WINDOW, 3_000)
    meta = metadata(materialize(database_url, journal, WINDOW.key))
    assert meta["rows_inserted"] == stats.rows
    assert meta["fills_read"] == stats.fills and meta["skipped_messages"] == stats.other_messages
    assert meta["rejects"] == 0 and meta["conflicts"] == 0


def test_append_live_writes_complete_lines_to_the_open_hour(journal: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    stats = simulate.append_live(journal, rate_per_second=200, stop=stop)
    assert stats.fills > 10
    (segment,) = journal.glob("date=*/hour=*/live-00001.jsonl")
    data = segment.read_bytes()
    assert data.endswith(b"\n")
    fills = [parse_line(line) for line in data.splitlines()]
    assert all(type(f) is Fill for f in fills) and len(fills) == stats.fills


def test_cli_writes_the_requested_hours(journal: Path) -> None:
    args = ["--journal", str(journal), "--hours", "3", "--fills-per-hour", "50"]
    assert simulate.main([*args, "--end-hour", "2026-11-20-05:00"]) == 0
    hours = sorted(p.parent.name + "/" + p.name for p in journal.glob("date=*/hour=*"))
    assert hours == [
        "date=2026-11-20/hour=03",
        "date=2026-11-20/hour=04",
        "date=2026-11-20/hour=05",
    ]
