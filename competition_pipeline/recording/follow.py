"""Which windows to (re)record: the sensors' decision, as pure functions.

**The committed state is the follower's offset.** Each load commits, in the same transaction as
its rows, what it read (``competition_fill_windows``: per journal segment the complete lines, the
bytes, the size and mtime it saw; for the stream, the stream position it covered). A window is
*behind* when the source holds more than that: never recorded, a new segment, a segment whose
size or mtime differs from what the committed read saw, or (stream) a message newer than the
committed position. Every tick compares the whole journal scan with the committed state (one
query), so a window whose run failed, was killed, cancelled or lost with the daemon is requested
again on the next tick: no run key, cursor or run history can make a window be forgotten.

The cursor (readable JSON in the instance storage) only paces retries: for each window it asked
for, the commit token (``recorded_at``) seen then, how many requests in a row ended without a
commit, and when. A window that keeps failing (a corrupt segment, a missing privilege) is asked
for again after ``base * 2**(failures-1)`` seconds, capped; any commit resets it. Losing the
cursor costs at most one early retry, never a request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from competition_pipeline.fills.journal import WindowState
from competition_pipeline.fills.windows import Window
from competition_pipeline.store.database import CommittedWindow
from competition_pipeline.window_report import WindowReport

NS = 1_000_000_000
#: The tag of a run that follows the open hour (``recording/live_hour.py``) instead of recording
#: it once; the follow sensors set it (value "open-hour") on the request of a window still within
#: its follow period (open, or closed less than its lateness ago).
FOLLOW_TAG = "competition/follow"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff for windows whose requests keep ending without a commit."""

    base_seconds: float = 15.0
    max_seconds: float = 600.0

    def seconds(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.max_seconds, self.base_seconds * 2 ** min(failures - 1, 30))


@dataclass
class Attempt:
    """A window that was asked for: the commit token then, failures in a row, when."""

    failures: int
    token: str | None
    requested_ns: int


@dataclass
class FollowCursor:
    attempts: dict[str, Attempt] = field(default_factory=dict)
    #: Stream sensor: the last stream sequence scanned, and per window the newest sequence seen
    #: for it that is not known to be committed yet.
    last_seq: int = 0
    wanted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None) -> FollowCursor:
        """Any earlier cursor form reads as empty where it differs: the cursor only paces."""
        data = json.loads(text) if text else {}
        attempts = {
            key: Attempt(**value)
            for key, value in data.get("attempts", {}).items()
            if isinstance(value, dict)
        }
        return cls(attempts, int(data.get("last_seq", 0)), dict(data.get("wanted", {})))

    def to_json(self) -> str:
        return json.dumps(
            {
                "attempts": {k: asdict(v) for k, v in sorted(self.attempts.items())},
                "last_seq": self.last_seq,
                "wanted": dict(sorted(self.wanted.items())),
            }
        )


@dataclass(frozen=True)
class Request:
    window: Window
    reason: str
    attempt: int  # 1 for a first request; n after n - 1 requests that ended without a commit


@dataclass
class Plan:
    requests: list[Request]
    cursor: FollowCursor
    behind: dict[str, str]  # every window behind, with the reason
    deferred: list[str]  # behind, but a live run is recording it
    backing_off: dict[str, float]  # behind, failing: seconds until the next request
    out_of_range: list[str]  # hour directories outside the partitions (before start, future)
    #: In the journal but retired by retention: never requested (only a rebuild restores one).
    retired: list[str] = field(default_factory=list)


def journal_behind(state: WindowState, committed: CommittedWindow | None) -> str | None:
    """Why the window's journal is ahead of what is committed, or None when it is not."""
    if committed is None:
        return "never recorded"
    positions = committed.positions
    if positions is None:
        return "recorded without offsets (an older release)"
    for segment in state.segments:
        position = positions.get(segment.relative)
        if position is None:
            return f"new segment {segment.relative}"
        if (segment.size, segment.mtime_ns) != (position["size"], position["mtime_ns"]):
            grew = segment.size > position["size"]
            return f"{'grown' if grew else 'changed'} segment {segment.relative}"
    return None


def journal_windows_behind(
    states: Iterable[WindowState], committed: Mapping[Window, CommittedWindow]
) -> dict[Window, str]:
    """The journal sensor's ``behind``: every scanned window ahead of its committed read."""
    return {
        s.window: reason
        for s in states
        if (reason := journal_behind(s, committed.get(s.window))) is not None
    }


def stream_behind(wanted_seq: int, committed: CommittedWindow | None, origin: str) -> str | None:
    """Why a stream window is behind: the stream holds a message (``wanted_seq``) beyond the
    stream position its latest load covered."""
    covered = committed.extent.get(origin, 0) if committed is not None else 0
    if covered >= wanted_seq:
        return None
    return "never recorded" if committed is None else f"stream seq {wanted_seq} > {covered}"


def stream_wanted(cursor: FollowCursor, seen: Mapping[Window, int]) -> dict[str, int]:
    """Per window the newest stream sequence known: the cursor's, raised by this tick's scan."""
    wanted = dict(cursor.wanted)
    for window, seq in seen.items():
        wanted[window.key] = max(wanted.get(window.key, 0), seq)
    return wanted


def stream_windows_behind(
    wanted: Mapping[str, int], committed: Mapping[Window, CommittedWindow], origin: str
) -> dict[Window, str]:
    """The stream sensor's ``behind``: windows holding a message beyond their covered position."""
    behind = {}
    for key, seq in wanted.items():
        window = Window.from_key(key)
        reason = stream_behind(seq, committed.get(window), origin)
        if reason is not None:
            behind[window] = reason
    return behind


def keep_stream_position(decision: Plan, last_seq: int, wanted: Mapping[str, int]) -> None:
    """The stream cursor after a tick: scanned up to ``last_seq``; windows the database has
    covered leave ``wanted``, the rest stay until it has."""
    decision.cursor.last_seq = last_seq
    still = {*decision.behind, *decision.out_of_range}
    decision.cursor.wanted = {k: v for k, v in wanted.items() if k in still}


def plan(
    behind: Mapping[Window, str],
    committed: Mapping[Window, CommittedWindow],
    cursor: FollowCursor,
    *,
    now_ns: int,
    live: set[str],
    first: Window,
    last: Window,
    backoff: Backoff,
    max_requests: int,
    retired: frozenset[Window] | set[Window] = frozenset(),
) -> Plan:
    """The run requests of one tick: every behind window inside the partitions that no live run
    is recording, that is not backing off and that retention did not take out (``retired``: its
    rows are gone on purpose, and the journal still holding it makes it no less retired); the
    hour in progress first, then the windows that failed least, newest first, at most
    ``max_requests`` (the rest come on later ticks)."""
    attempts: dict[str, Attempt] = {}
    candidates: list[tuple[Window, str, int, str | None]] = []
    deferred: list[str] = []
    backing_off: dict[str, float] = {}
    out_of_range: list[str] = []
    in_range: dict[str, str] = {}
    skipped_retired: list[str] = []
    for window, reason in sorted(behind.items()):
        key = window.key
        if window in retired:
            skipped_retired.append(key)
            continue
        if not first <= window <= last:
            out_of_range.append(key)
            continue
        in_range[key] = reason
        previous = cursor.attempts.get(key)
        record = committed.get(window)
        token = record.recorded_at if record is not None else None
        if key in live:
            deferred.append(key)
            if previous is not None:
                attempts[key] = previous
            continue
        failures = 0
        if previous is not None and previous.token == token:
            # Asked for before, nothing committed since, no run alive: that request failed.
            failures = previous.failures + 1
            wait_ns = int(backoff.seconds(failures) * NS)
            if now_ns < previous.requested_ns + wait_ns:
                backing_off[key] = (previous.requested_ns + wait_ns - now_ns) / NS
                attempts[key] = previous
                continue
        candidates.append((window, reason, failures, token))
    candidates.sort(key=lambda c: (c[0] != last, c[2], -c[0].start.timestamp()))
    requests: list[Request] = []
    for window, reason, failures, token in candidates:
        if len(requests) >= max_requests and window != last:
            if window.key in cursor.attempts:
                attempts[window.key] = cursor.attempts[window.key]
            continue
        requests.append(Request(window, reason, failures + 1))
        attempts[window.key] = Attempt(failures, token, now_ns)
    next_cursor = FollowCursor(attempts, cursor.last_seq, dict(cursor.wanted))
    return Plan(
        requests, next_cursor, in_range, deferred, backing_off, out_of_range, skipped_retired
    )


@dataclass
class StandingsPacer:
    """When to refresh the running competitions' standings while a window is followed: after a
    commit that inserted rows, at most every ``min_seconds``, and never sooner than four times
    the last refresh took after it (a refresh of a large competition costs more)."""

    min_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    dirty: bool = False
    next_at: float = 0.0

    def committed(self, report: WindowReport | None) -> None:
        if report is not None and (report.rows_inserted or report.conflicts_new):
            self.dirty = True

    def due(self) -> bool:
        return self.dirty and self.clock() >= self.next_at

    def refreshed(self, started: float) -> None:
        """After a refresh that began at ``started`` (``clock()``)."""
        now = self.clock()
        self.dirty = False
        self.next_at = now + max(self.min_seconds, 4 * (now - started))
