"""Publish engine messages to the fill stream, as the engine does (contract, section 4).

    competition-pipeline publish journal DIR [--window YYYY-MM-DD-HH:00 ...]
    competition-pipeline publish simulate [--rate 20] [--duration 60]

Subjects ``<prefix>.<underlying>`` (``engine.fills.BTC``; messages without a symbol go to
``<prefix>.system``); header ``Nats-Msg-Id`` is the ``trade_id`` of a fill (a digest of the line
for other messages), so the stream's duplicate window drops a re-publish. The stream is created
when missing (subjects ``<prefix>.>``, a two-minute duplicate window).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.stream import STREAM, SUBJECT_PREFIX, NatsAuth, connect, fill_head
from competition_pipeline.fills.windows import Window
from competition_pipeline.tools.log import log
from competition_pipeline.tools.progress import Progress


@dataclass
class Published:
    messages: int = 0
    duplicates: int = 0  # dropped by the stream's duplicate window


def subject_and_id(line: bytes, prefix: str) -> tuple[str, str]:
    """The subject (by underlying) and the Nats-Msg-Id of one engine message."""
    fill = fill_head(line)  # empty for a bad line: published as it is, for the pipeline to reject
    symbol, trade_id = fill.get("symbol"), fill.get("trade_id")
    underlying = symbol.split("-", 1)[0] if isinstance(symbol, str) and symbol else "system"
    if not underlying.isalnum():
        underlying = "system"
    msg_id = (
        str(trade_id)
        if type(trade_id) is int
        else "x-" + hashlib.blake2b(line, digest_size=12).hexdigest()
    )
    return f"{prefix}.{underlying}", msg_id


async def ensure_stream(js, stream: str = STREAM, prefix: str = SUBJECT_PREFIX) -> None:
    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=120.0)
        )


async def publish_lines(
    url: str,
    lines: Iterable[bytes],
    *,
    stream: str = STREAM,
    prefix: str = SUBJECT_PREFIX,
    progress: Progress | None = None,
) -> Published:
    """Publish each line as one message and wait for the stream's acknowledgement."""
    nc = await connect(url, 5.0, NatsAuth.from_environ(os.environ))
    result = Published()
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream, prefix)
        for line in lines:
            subject, msg_id = subject_and_id(line, prefix)
            ack = await js.publish(subject, line, stream=stream, headers={"Nats-Msg-Id": msg_id})
            result.messages += 1
            result.duplicates += bool(ack.duplicate)
            if progress is not None:
                progress(result.messages)
    finally:
        await nc.close()
    if progress is not None:
        progress.finish(result.messages)
    return result


def journal_lines(root: Path, windows: list[Window] | None = None) -> Iterable[bytes]:
    """Every complete line of the journal (or of ``windows``), in window and segment order."""
    from competition_pipeline.fills.journal import scan
    from competition_pipeline.fills.source import ReadStats

    source = JournalSource(root)
    for window in windows or [state.window for state in scan(root)[0]]:
        for batch in source.read_window(window, ReadStats()):
            for _, line in batch.records:
                if type(line) is bytes:  # a line over the contract's limit is not published
                    yield line


def run(args: argparse.Namespace) -> int:
    if args.source == "journal":
        windows = [Window.from_key(k) for k in args.window] if args.window else None
        lines: Iterable[bytes] = journal_lines(args.root, windows)
    else:
        lines = live_lines(args.rate, args.duration)
    progress = Progress("published", log)
    result = asyncio.run(
        publish_lines(args.url, lines, stream=args.stream, prefix=args.prefix, progress=progress)
    )
    print(f"published {result.messages:,} messages ({result.duplicates:,} dropped as duplicates)")
    return 0


def live_lines(rate: float, duration: float) -> Iterable[bytes]:
    from competition_pipeline.tools.simulate.messages import FillSimulator

    sim = FillSimulator(seed=time.time_ns() % 2**32, trade_id_base=time.time_ns() // 1000)
    started = time.monotonic()
    while not duration or time.monotonic() - started < duration:
        now_ms = time.time_ns() // 1_000_000
        batch = sim.render([now_ms])
        yield from (line for line in batch.text.encode().splitlines() if line)
        time.sleep(1 / rate if rate > 0 else 1)
