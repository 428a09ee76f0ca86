"""Progress lines of long commands: a line per tenth of a known total, time-based otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from competition_pipeline.tools import cli, simulate
from competition_pipeline.tools.progress import Progress


def test_a_known_total_gives_one_line_per_tenth_and_the_last_at_100_percent() -> None:
    lines: list[str] = []
    progress = Progress("rows", lines.append)
    for done in range(0, 1001, 7):
        progress(done, 1000)
    progress(1000, 1000)
    assert [line.split("(")[1].split("%")[0] for line in lines] == [
        str(p) for p in range(0, 110, 10)
    ]
    assert lines[-1].startswith("rows: 1,000 of 1,000 (100%, ")
    progress.finish(1000)  # already shown: nothing more
    assert len(lines) == 11


def test_an_unknown_total_is_shown_at_most_every_interval_and_finished() -> None:
    lines: list[str] = []
    progress = Progress("published", lines.append, every_seconds=3600)
    for done in range(1, 10_001):
        progress(done)
    assert lines == []  # not an hour yet: no flood of lines
    progress.finish(10_000)
    assert len(lines) == 1 and lines[0].startswith("published: 10,000 (") and "done" in lines[0]
    every_time = Progress("published", lines.append, every_seconds=0)
    every_time(5)
    assert lines[-1].startswith("published: 5 (")


def test_the_simulator_shows_the_way_through_a_large_hour(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fills = 3 * simulate.CHUNK_FILLS
    args = ["--journal", str(tmp_path), "--hours", "1", "--fills-per-hour", str(fills)]
    assert cli.main(["simulate", *args, "--end-hour", "2026-11-20-05:00"]) == 0
    err = capsys.readouterr().err
    assert f"[simulate] 2026-11-20-05:00: {fills:,} of {fills:,} (100%" in err
    assert f"[simulate] 2026-11-20-05:00: {simulate.CHUNK_FILLS:,} of {fills:,} (" in err
