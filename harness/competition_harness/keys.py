"""The answer a recording must reach, computed apart from the recording: the ``(trade_id,
wallet)`` keys of every valid fill's wallet rows, read straight from the journal's segments or
from the lines a stream acknowledged; and the keys the table holds. The soak, the benchmark and
the tests compare the two (one reading of the journal for all of them)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path

import psycopg

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.journal import open_segment, scan
from competition_pipeline.fills.rows import fill_rows, named
from competition_pipeline.fills.source import SourceError
from competition_pipeline.fills.windows import Window

Key = tuple[int, str]


def _fills(lines: Iterable[bytes]) -> Iterable[Fill]:
    for line in lines:
        result = parse_line(line)
        if type(result) is Fill:
            yield result


def _keys(fill: Fill) -> Iterable[Key]:
    return ((row.trade_id, row.wallet) for row in map(named, fill_rows(fill, 0, "", 0)))


def journal_keys(journal: Path, windows: Iterable[Window] | None = None) -> set[Key]:
    """Every valid fill's keys in the journal's hour directories (or only ``windows``), segments
    plain and gzip, each fill in its directory's window. A window with a segment that cannot be
    read (a corrupt one) contributes nothing: the recording cannot read it either."""
    wanted = None if windows is None else set(windows)
    keys: set[Key] = set()
    for state in scan(journal)[0]:
        if wanted is not None and state.window not in wanted:
            continue
        window_keys: set[Key] = set()
        try:
            for segment in state.segments:
                with open_segment(segment) as handle:
                    data = handle.read()
                for fill in _fills(data.split(b"\n")):
                    if state.window.contains_ms(fill.timestamp_ms):
                        window_keys.update(_keys(fill))
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile, SourceError):
            continue
        keys |= window_keys
    return keys


def published_keys(lines: Iterable[bytes]) -> tuple[set[Key], int]:
    """Every valid fill's keys among the lines the stream acknowledged, and the number of hour
    windows they fall in."""
    keys: set[Key] = set()
    windows: set[Window] = set()
    for fill in _fills(lines):
        keys.update(_keys(fill))
        windows.add(Window.containing_ms(fill.timestamp_ms))
    return keys, len(windows)


def stored_keys(url: str) -> set[Key]:
    """The keys ``competition_fill_events`` holds (none before its schema exists)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass('competition_fill_events')").fetchone()[0]
        if exists is None:
            return set()
        return set(conn.execute("SELECT trade_id, wallet FROM competition_fill_events"))
