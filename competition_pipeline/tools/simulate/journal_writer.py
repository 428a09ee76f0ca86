"""Journal files as the engine writes them (``contracts/fill-journal.md``, section 3).

``date=YYYY-MM-DD/hour=HH/seg-NNNNN.jsonl[.gz]`` segments, closed ones gzip-compressed and the
newest plain and growing: :func:`write_hour` writes closed hours (and the open one up to now),
:func:`append_live` keeps appending to the open hour. :func:`write_hour` takes its trade ids from
the lower half of its hour's range and :func:`append_live` from the upper half of the hour it
starts in, offset by the millisecond, so restarting the demo never reuses an id with different
content.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.windows import Window
from competition_pipeline.tools.simulate.messages import (
    HOUR_MS,
    Batch,
    FillSimulator,
    default_trade_id_base,
    live_trade_id_base,
)

SEGMENT_NAME = re.compile(r"seg-([0-9]{5,})\.jsonl(\.gz)?", re.ASCII)
CHUNK_FILLS = 20_000  # lines rendered per write: a few MB, so 1M fills never sit in memory


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


def segment_numbers(directory: Path) -> list[tuple[int, str]]:
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
    existing = segment_numbers(directory)
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
    existing = segment_numbers(directory)
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
        sim = FillSimulator(seed=time.time_ns(), trade_id_base=live_trade_id_base(last_ms))
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
