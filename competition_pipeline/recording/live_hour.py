"""The live hour: one run tails the open hour and commits what was appended every second or so.

A run per change pays a sensor tick and a run start per hop (5-10 s at Dagster's floor, and a
run's events in the instance's history each time); the live hour's run pays them once an hour.
It reads the window from its committed offsets, commits a small load (the same per-window
transaction as any run's: rows and offsets together), sleeps the rest of its interval and goes
again, until the hour is closed past its lateness. Nothing is kept outside the database: a
follower killed at any point leaves the committed offsets, and the next starts from them.

**One follower per hour, fenced.** The run takes the hour's lease when it starts
(``competition_fill_followers``: its run id, the generation bumped by one; the newest follower
wins) and every one of its loads checks, under the lease row's lock in the load's own
transaction, that the lease still names its run and generation. A follower that lost its place
(a newer one started: a redelivered task, two requests racing, its host cut off and replaced)
has its next load refused (:class:`~competition_pipeline.store.database.LeaseLost`), commits
nothing more and ends without writing. The row lock orders a takeover and a load: the takeover
waits for a load in progress to commit, and every load after it is refused.

**A stop is an ordinary end.** ``stop`` (set by the Dagster layer on SIGTERM or SIGINT) ends the
loop after the load in progress has committed; the lease is handed back, so the next follower
takes the hour at once, and the end says why.

Plain Python: the Dagster wrapper is ``defs/live_hour.py``. (The sensors' rule that decides which
windows to request is :mod:`~competition_pipeline.recording.follow`, a different thing.)
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace

from competition_pipeline.fills.source import FillSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import (
    RejectBudget,
    _load,
    _parse_windows,
    record_window,
    window_totals,
)
from competition_pipeline.recording.follow import StandingsPacer
from competition_pipeline.store.database import (
    CompetitionStore,
    Fence,
    Lease,
    LeaseLost,
    LoadSession,
    Unheld,
)
from competition_pipeline.store.standings import CompetitionError, Competitions
from competition_pipeline.window_report import WindowReport


class HourRetired(Exception):
    """Retention took the hour out while it was followed: nothing more is recorded."""


def follow_window(
    source: FillSource,
    store: CompetitionStore,
    window: Window,
    *,
    until: float,
    interval: float = 1.0,
    bridge: Window | None = None,
    reject_budget: RejectBudget | None = None,
    lease: Lease | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
    stopped: Callable[[], bool] = lambda: False,
) -> Iterator[WindowReport | None]:
    """Record ``window`` again and again, every ``interval`` seconds, until ``clock()`` passes
    ``until`` (then once more, so the last round reads everything filed by then) or ``stopped()``
    (after the round in progress); each round yields the report of the load it committed, or
    None when the source had nothing new.

    ``bridge`` (the next hour) is also recorded in each round once it has begun, and its loads'
    reports yielded too, until that hour's own follower holds it: the hour's first fills are
    committed while its follower is being requested and started. With ``lease`` every load of
    ``window`` is fenced by it (:class:`LeaseLost` raised, nothing of that load committed).

    One connection serves the reads, one session the loads. A window retention retired yields a
    report with ``retired`` set and ends the follow (a retired ``bridge`` is left alone).
    """
    bridging = bridge is not None
    with store.shared_connection(), store.session() as session:
        while True:
            now = clock()
            last_round = now >= until or stopped()
            started = time.perf_counter()
            if store.retired_windows([window]):
                yield WindowReport(window=window.key, source=source.describe(), retired=True)
                return
            yield _follow_round(source, store, session, window, reject_budget, lease)
            if bridging and bridge is not None and now >= bridge.start.timestamp():
                if not store.retired_windows([bridge]):
                    try:
                        report = _follow_round(
                            source, store, session, bridge, reject_budget, Unheld(bridge)
                        )
                    except LeaseLost:  # its own follower has it now
                        bridging = False
                        report = None
                    if report is not None:
                        yield report
            if last_round or stopped():
                return
            sleep(max(0.0, interval - (time.perf_counter() - started)))


def _follow_round(
    source: FillSource,
    store: CompetitionStore,
    session: LoadSession,
    window: Window,
    reject_budget: RejectBudget | None,
    fence: Fence | None,
) -> WindowReport | None:
    """One load of ``window`` from its committed offsets, or None when nothing was appended."""
    started = time.perf_counter()
    previous = store.previous_loads([window])
    with closing(_parse_windows(source, [window], previous)) as parsed:
        item = next(parsed)
        if item.unchanged:
            return None
        before = previous.get(window)
        return _load(session, source, item, parsed, before, reject_budget, started, fence)


@dataclass
class LiveHourReport:
    """What the follower reports: after its first round (the UI shows the hour followed, with its
    counts, from its first second instead of *Missing* for a minute: a follower is an op, so
    its partition never counts as *Materializing*), then every ``progress_seconds`` while it
    follows, and once at its end (``ended`` set). ``totals`` are the window's running totals
    over every committed load (None before its first), with ``seconds`` the follower's real time
    so far."""

    window: Window
    run_id: str
    generation: int
    totals: WindowReport | None
    loads: int
    rows: int
    refreshes: int
    bridged: int
    seconds: float
    #: Why it ended (its last report only): "closed", "stopped: ..." or "superseded: ...".
    ended: str | None = None
    took_over_from: str | None = None

    @property
    def superseded(self) -> bool:
        return self.ended is not None and self.ended.startswith("superseded")

    @property
    def stopped(self) -> bool:
        return self.ended is not None and self.ended.startswith("stopped")


@dataclass
class LiveHour:
    """The open hour's follower of ``window`` for run ``run_id`` (see the module docstring)."""

    source: FillSource
    store: CompetitionStore
    window: Window
    run_id: str
    until: float
    host: str | None = None
    #: When the run was created: a run older than the hour's holder does not take it over.
    run_created: dt.datetime | None = None
    interval: float = 1.0
    standings_seconds: float = 5.0
    progress_seconds: float = 60.0
    reject_budget: RejectBudget | None = None
    stop: threading.Event | None = None
    #: Why ``stop`` was set (asked when the follower ends on it).
    stop_reason: Callable[[], str] = lambda: "stopped"

    def run(self) -> Iterator[LiveHourReport]:
        """Take the hour, follow it, end: progress reports, then the last one (``ended``).
        Source and database errors propagate (every load before them is committed)."""
        started = time.monotonic()
        try:
            lease = self.store.take_hour(self.window, self.run_id, self.host, self.run_created)
        except LeaseLost as lost:
            yield LiveHourReport(
                self.window,
                self.run_id,
                0,
                None,
                loads=0,
                rows=0,
                refreshes=0,
                bridged=0,
                seconds=0.0,
                ended=f"superseded: {lost}; this run ended without writing",
            )
            return
        competitions = Competitions(self.store)
        pacer = StandingsPacer(self.standings_seconds)
        counts = {"loads": 0, "rows": 0, "refreshes": 0, "bridged": 0}
        reported = time.monotonic() - self.progress_seconds  # the first round reports at once
        stop = self.stop or threading.Event()

        def report(ended: str | None = None) -> LiveHourReport:
            seconds = time.monotonic() - started
            totals = window_totals(self.store, self.window) if ended != "superseded" else None
            if totals is not None:
                totals = replace(totals, seconds=seconds, incremental=counts["loads"] > 1)
            return LiveHourReport(
                self.window,
                self.run_id,
                lease.generation,
                totals,
                seconds=seconds,
                ended=ended,
                took_over_from=lease.previous_run,
                **counts,
            )

        handed_back = False
        try:
            try:
                for load in follow_window(
                    self.source,
                    self.store,
                    self.window,
                    until=self.until,
                    interval=self.interval,
                    bridge=Window(self.window.end),
                    reject_budget=self.reject_budget,
                    lease=lease,
                    sleep=stop.wait,
                    stopped=stop.is_set,
                ):
                    if load is not None and load.window != self.window.key:  # the next hour
                        counts["bridged"] += 1
                        pacer.committed(load)
                    elif load is not None:
                        if load.retired:
                            raise HourRetired(self.window.key)
                        counts["loads"] += 1
                        counts["rows"] += load.rows_inserted
                        pacer.committed(load)
                    if pacer.due():
                        counts["refreshes"] += self._refresh_standings(competitions, pacer)
                    if time.monotonic() - reported >= self.progress_seconds:
                        reported = time.monotonic()
                        yield report()
            except LeaseLost as lost:
                handed_back = True  # not ours to hand back
                last = report("superseded")
                last.ended = f"superseded: {lost}; this run ended without writing"
                yield last
                return
            if pacer.dirty:
                counts["refreshes"] += self._refresh_standings(competitions, pacer)
            if stop.is_set():
                why = f"stopped: {self.stop_reason()}"
            else:
                why = "closed"
                if window_totals(self.store, self.window) is None:
                    # Never a fill, nor a segment: recorded once, as a run would.
                    record_window(
                        self.source, self.store, self.window, reject_budget=self.reject_budget
                    )
            self.store.hand_back(lease, why)
            handed_back = True
            yield report(why)
        finally:
            if not handed_back:  # an error: hand the hour back so its next follower starts now
                try:
                    self.store.hand_back(lease, "ended by an error")
                except Exception:  # noqa: BLE001 (the error being raised is the one that matters)
                    pass

    def _refresh_standings(self, competitions: Competitions, pacer: StandingsPacer) -> int:
        """Refresh the standings of the competitions running over the window; how many."""
        started = pacer.clock()
        with competitions.store.wrap_errors("cannot refresh the standings on"):  # a StoreError
            ids = competitions.active_overlapping(self.window.start, self.window.end)
            for competition_id in ids:
                try:
                    competitions.refresh(competition_id)
                except CompetitionError:  # removed meanwhile
                    continue
        pacer.refreshed(started)
        return len(ids)
