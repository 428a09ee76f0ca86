"""The open hour's follower in tests: the hour to follow, a short follower run in process, and one
in a process of its own that a test can ``kill -9`` while fills arrive. Both sources (the journal
and the stream) use these; ``source`` is a ``FillSourceResource``'s configuration."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import dagster as dg

from competition_pipeline.defs.live_hour import build_live_hour_job
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.fills.source import FillSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import reconcile_window, window_totals
from competition_pipeline.recording.live_hour import follow_window
from competition_pipeline.store.database import CompetitionStore
from tests.helpers.location import SETTINGS
from tests.helpers.sql import query

# A follower run in a process of its own (the settings from its environment), to be killed.
_FOLLOWER = textwrap.dedent(
    """
    import json
    import os
    import sys
    from competition_pipeline import settings
    from competition_pipeline.defs import live_hour
    from competition_pipeline.defs.live_hour import build_live_hour_job

    # A test may ask for progress materializations more often than every minute.
    live_hour.FOLLOW_PROGRESS_SECONDS = float(os.environ.get("TEST_PROGRESS_SECONDS", "60"))
    from competition_pipeline.defs.resources import (
        CompetitionDatabase, FillSourceResource, RecordingPolicy)

    url, key, source = sys.argv[1:]
    build_live_hour_job(settings.load()).execute_in_process(
        partition_key=key,
        resources={
            "database": CompetitionDatabase(url=url),
            "fill_source": FillSourceResource(**json.loads(source)),
            "policy": RecordingPolicy(),
        },
    )
    """
)


def open_window(at_least: float = 120, settled: float = 0) -> Window:
    """The hour in progress, with at least ``at_least`` seconds left and at least ``settled``
    seconds gone (else waited for): ``settled`` past the lateness, the closing hour's follower has
    ended (a test that stops everything would otherwise catch it starting)."""
    while True:
        now = dt.datetime.now(dt.UTC)
        window = Window.containing(now)
        left = (window.end - now).total_seconds()
        gone = (now - window.start).total_seconds()
        if left < at_least:
            time.sleep(left + 1)
        elif gone < settled:
            time.sleep(settled - gone)
        else:
            return window


def wait_until(predicate: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the follower did not commit"
        time.sleep(0.2)


def follow_briefly(
    database_url: str, source: dict[str, Any], window: Window, seconds: float, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """A follower run of ``window`` whose hour "closes past its lateness" ``seconds`` from now."""
    lateness = time.time() + seconds - window.end.timestamp()
    settings = replace(SETTINGS, follow_lateness_seconds=lateness, follow_standings_seconds=0.5)
    return build_live_hour_job(settings).execute_in_process(
        partition_key=window.key,
        resources={
            "database": CompetitionDatabase(url=database_url),
            "fill_source": FillSourceResource(**source),
            "policy": RecordingPolicy(),
        },
        **kwargs,
    )


def start_follower(
    database_url: str, source: dict[str, Any], window: Window, **env: str
) -> subprocess.Popen:
    """A follower of ``window`` in a process of its own, loading every 0.2 s."""
    return subprocess.Popen(
        [sys.executable, "-c", _FOLLOWER, database_url, window.key, json.dumps(source)],
        env={**os.environ, "FILL_FOLLOW_INTERVAL_SECONDS": "0.2", **env},
    )


@contextmanager
def writing(write: Callable[[], None], every: float = 0.01) -> Iterator[None]:
    """``write()`` called every ``every`` seconds in a thread while the block runs (fills
    arriving while a follower loads)."""
    stop = threading.Event()

    def writer() -> None:
        while not stop.wait(every):
            write()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def kill_after(follower: subprocess.Popen, seconds: float) -> None:
    """``kill -9`` the follower ``seconds`` from now (while fills arrive, the kill lands at any
    point of a load)."""
    try:
        time.sleep(seconds)
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()


def follow_in_rounds(
    source: FillSource, database_url: str, window: Window, add: Callable[[int, int], None]
) -> int:
    """One fill is there; the follower runs four rounds on the test's clock, and after each,
    ``add(first, n)`` appends (or publishes) fills ``first .. first + n - 1``: 3, none (a quiet
    second), 5, 7. Asserted for either source: each round's load read only what was added and
    committed it with its rows, the quiet round committed nothing, the window's totals and its
    reconciliation agree. Returns how many fills there are, for the source's own position."""
    store = CompetitionStore(database_url)
    store.ensure_schema()
    added = [1]
    rounds = iter([3, 0, 5, 7])
    now = [0.0]

    def sleep(_: float) -> None:
        now[0] += 1
        n = next(rounds, 0)
        if n:
            add(sum(added) + 1, n)
            added.append(n)

    reports = list(
        follow_window(source, store, window, until=4.0, clock=lambda: now[0], sleep=sleep)
    )
    loads = [r for r in reports if r is not None]
    assert [r.lines_read for r in loads] == [1, 3, 5, 7]
    assert reports[2] is None  # the quiet round
    assert all(r.incremental for r in loads[1:])
    assert [r.rows_inserted for r in loads] == [2, 6, 10, 14]
    fills = sum(added)
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2 * fills,)]
    totals = window_totals(store, window)
    assert totals is not None
    assert (totals.lines_read, totals.rows_inserted, totals.rows_stored) == (
        fills,
        2 * fills,
        2 * fills,
    )
    check = reconcile_window(source, store, window)
    assert (check.expected_rows, check.missing, check.unexpected) == (2 * fills, 0, 0)
    return fills
