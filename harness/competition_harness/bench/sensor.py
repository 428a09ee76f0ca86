"""Figure e: one sensor tick (scan + decision) over a journal of many hour directories."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from competition_pipeline.fills.journal import scan, window_dir
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.recording.follow import Backoff, FollowCursor, journal_behind, plan
from competition_pipeline.store.database import CommittedWindow


def sensor_tick(directories: int) -> dict:
    """One tick's decision over ``directories`` hours, every one committed as it is (the common
    case: the whole journal compared with the committed offsets, nothing behind)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = Window.from_key("2025-01-01-00:00")
        for i in range(directories):
            directory = window_dir(root, Window(first.start + i * HOUR))
            directory.mkdir(parents=True)
            (directory / "seg-00001.jsonl.gz").write_bytes(b"")
            (directory / "seg-00002.jsonl").write_bytes(b"")
        committed = {
            state.window: CommittedWindow(
                {s.relative: {"size": s.size, "mtime_ns": s.mtime_ns} for s in state.segments},
                {},
                "2025-01-01T00:00:00+00:00",
            )
            for state in scan(root)[0]
        }
        started = time.perf_counter()
        states, _ = scan(root)
        behind = {
            s.window: reason
            for s in states
            if (reason := journal_behind(s, committed.get(s.window))) is not None
        }
        decision = plan(
            behind,
            committed,
            FollowCursor(),
            now_ns=time.time_ns(),
            live=set(),
            first=first,
            last=Window(first.start + directories * HOUR),
            backoff=Backoff(),
            max_requests=24,
        )
        seconds = time.perf_counter() - started
    return {
        "directories": directories,
        "seconds": seconds,
        "behind": len(behind),
        "cursor_bytes": len(decision.cursor.to_json()),
    }
