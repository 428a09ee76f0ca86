"""``competition-pipeline simulate``: write a simulated engine fill journal, then follow.

competition-pipeline simulate --journal DIR --hours 6 --fills-per-hour 2000 --follow
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import threading
import time
from collections.abc import Iterator

from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.tools.log import log
from competition_pipeline.tools.progress import Progress
from competition_pipeline.tools.simulate.journal_writer import (
    CHUNK_FILLS,
    LiveStats,
    append_live,
    segment_numbers,
    write_hour,
)
from competition_pipeline.tools.simulate.messages import (
    HOUR_MS,
    FillSimulator,
    default_trade_id_base,
    live_trade_id_base,
)


def _windows(end: Window, hours: int) -> Iterator[Window]:
    for back in range(hours - 1, -1, -1):
        yield Window(end.start - back * HOUR)


def run(args: argparse.Namespace) -> int:
    """Write the ``--hours`` most recent hours of journal; with ``--follow``, keep appending."""
    if args.hours < 1 or args.fills_per_hour < 0 or args.segments < 1:
        args.error("--hours and --segments must be >= 1, --fills-per-hour >= 0")
    if args.follow and args.rate <= 0:
        args.error("--rate must be > 0")
    try:
        end = (
            Window.from_key(args.end_hour)
            if args.end_hour
            else Window.containing(dt.datetime.now(dt.UTC))
        )
    except ValueError as exc:
        args.error(str(exc))
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
        if segment_numbers(window_dir(args.journal, window)):
            # Rewriting an hour would give its trade ids a second, different content: conflicts.
            log(f"{window.key}: already has segments, left as it is")
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
            progress=Progress(window.key, log) if count > CHUNK_FILLS else None,
        )
        written += 1
        fills += stats.fills
        rows += stats.rows_expected
        lines += stats.lines
        log(
            f"{window.key}: {stats.fills} fills, {stats.others} other messages, "
            f"{len(stats.segments)} segments ({time.perf_counter() - started:.2f}s)"
        )
    log(
        f"wrote {written} of {len(windows)} hours to {args.journal}: {fills} fills, {lines} lines, "
        f"{rows} rows expected, next trade id {sim.next_trade_id}, "
        f"{time.perf_counter() - started:.2f}s"
    )


def _follow(args: argparse.Namespace, sim: FillSimulator) -> None:
    """Append live fills in a thread until ``--duration`` ends, Ctrl-C or SIGTERM."""
    # Live ids come from the upper half of the current hour's range, offset by the millisecond,
    # so following again after a restart never reuses the ids of the previous run.
    sim.skip_to(live_trade_id_base(time.time_ns() // 1_000_000))
    stop = threading.Event()
    result: list[LiveStats] = []
    follower = threading.Thread(
        target=lambda: result.append(
            append_live(args.journal, rate_per_second=args.rate, stop=stop, sim=sim)
        ),
        name="fill-simulator",
        daemon=True,
    )
    log(f"appending {args.rate:g} fills/s to the open hour; Ctrl-C to stop")
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
        log(
            f"appended {live.fills} fills ({live.rows_expected} rows expected) in "
            f"{live.seconds:.1f}s to {', '.join(live.windows) or 'no hour'}"
        )
