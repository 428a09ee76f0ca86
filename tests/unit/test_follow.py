"""The follow rule without a server: ``plan``'s backoff and request budget, the cursor, the
journal scan it starts from, and the hourly schedule. The sensor that applies the rule to a
real instance and database is tested in tests/integration/test_sensor.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg

from competition_pipeline.defs.schedules import competition_fill_events_hourly
from competition_pipeline.fills.journal import scan
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.follow import (
    Attempt,
    Backoff,
    FollowCursor,
    StandingsPacer,
    plan,
)
from competition_pipeline.store.database import CommittedWindow
from competition_pipeline.window_report import WindowReport
from tests.helpers.journal import fill, write_segment

NOW = Window.containing(dt.datetime.now(dt.UTC))
RECENT = Window(NOW.start - 3 * HOUR)


def test_backoff_grows_and_a_commit_resets_it() -> None:
    """The pure decision: n requests in a row without a commit wait base * 2**(n-1), capped."""
    window = Window(NOW.start - 5 * HOUR)
    behind = {window: "never recorded"}

    def decide(cursor: FollowCursor, now_s: int, committed=None):
        return plan(
            behind, committed or {}, cursor, now_ns=now_s * 10**9, live=set(), first=window,
            last=NOW, backoff=Backoff(10, 60), max_requests=10,
        )  # fmt: skip

    requested_at, cursor = [], FollowCursor()
    for now in range(0, 400, 5):  # a tick every 5 s, no run ever commits
        decision = decide(cursor, now)
        if decision.requests:
            requested_at.append(now)
            cursor = decision.cursor
    gaps = [b - a for a, b in zip(requested_at, requested_at[1:], strict=False)]
    assert gaps[:5] == [10, 20, 40, 60, 60]  # 10 s after the first failure, doubling, capped
    committed = {window: CommittedWindow({}, {}, "2026-12-01T00:00:00+00:00")}
    reset = decide(cursor, 401, committed)
    assert [r.attempt for r in reset.requests] == [1]


def test_at_most_max_requests_a_tick_the_open_hour_always_included() -> None:
    windows = [Window(NOW.start - i * HOUR) for i in range(1, 40)]
    behind = {w: "never recorded" for w in [*windows, NOW]}
    decision = plan(
        behind,
        {},
        FollowCursor(),
        now_ns=0,
        live=set(),
        first=windows[-1],
        last=NOW,
        backoff=Backoff(),
        max_requests=5,
    )
    assert [r.window for r in decision.requests] == [NOW, *windows[:4]]


def test_cursor_round_trips_and_an_old_cursor_reads_as_empty() -> None:
    cursor = FollowCursor({"2026-11-20-03:00": Attempt(2, "t", 5)}, 7, {"2026-11-20-04:00": 9})
    assert FollowCursor.from_json(cursor.to_json()) == cursor
    assert FollowCursor.from_json(None) == FollowCursor()
    old = json.dumps({"watermark_ns": 1, "fingerprints": {"a": "b"}, "pending": ["x"]})
    assert FollowCursor.from_json(old) == FollowCursor()


def test_scan_reports_entries_outside_the_layout(journal: Path) -> None:
    write_segment(journal, RECENT, "seg.jsonl", [fill(1, RECENT.start_ms)])
    (journal / "date=2026-13-45").mkdir()
    (journal / "date=2026-11-20" / "hour=99").mkdir(parents=True)
    (journal / "notes.md").write_text("x")
    states, ignored = scan(journal)
    assert [s.window for s in states] == [RECENT]
    assert "notes.md" in ignored and "date=2026-11-20/hour=99" in ignored
    assert any(name.startswith("date=2026-13-45") for name in ignored)


def test_schedule_requests_the_window_that_just_closed() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 20, 4, 5, tzinfo=dt.UTC)
    )
    request = competition_fill_events_hourly(context)
    assert request.partition_key == "2026-11-20-03:00"
    assert request.run_key == "2026-11-20-03:00"


def test_the_standings_pacer_refreshes_after_new_rows_at_most_every_interval() -> None:
    """A follower refreshes the standings only after a load that inserted rows, at most every
    ``min_seconds``, and never sooner than four times the last refresh took."""
    now = [0.0]
    pacer = StandingsPacer(5.0, clock=lambda: now[0])
    pacer.committed(None)
    pacer.committed(WindowReport(window="2026-11-20-03:00", source="journal"))
    assert not pacer.due()  # nothing inserted: nothing to refresh
    pacer.committed(WindowReport(window="2026-11-20-03:00", source="journal", rows_inserted=2))
    assert pacer.due()
    pacer.refreshed(started=now[0])
    pacer.committed(WindowReport(window="2026-11-20-03:00", source="journal", rows_inserted=2))
    now[0] = 4.9
    assert not pacer.due()
    now[0] = 5.0
    assert pacer.due()
    started, now[0] = now[0], 8.0  # a refresh that took 3 s
    pacer.refreshed(started=started)
    pacer.committed(WindowReport(window="2026-11-20-03:00", source="journal", rows_inserted=1))
    now[0] = 19.9
    assert not pacer.due()
    now[0] = 20.0
    assert pacer.due()
