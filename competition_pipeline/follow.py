"""Which windows to (re)record: the journal sensor's decision, as a pure function over a cursor.

The cursor is small, readable JSON kept by Dagster in the instance storage (PostgreSQL), so it
survives restarts of everything:

* ``watermark_ns``: the wall-clock time the previous tick started scanning. A window outside the
  horizon is requested when its directory or a segment changed at or after it (minus a second of
  slack for coarse file-system clocks): a late fill in an old hour, a new segment, a grown tail.
* ``fingerprints``: the data fingerprint (segment names, sizes, mtimes) last requested for each
  window of the recent horizon (default 48 hours before the newest window). A window is requested
  when its fingerprint differs, so the open hour is requested as it grows.
* ``pending``: windows that changed while a run of theirs was queued or in progress; they are
  decided again on the next tick, whatever their mtimes, so a deferral never loses a change.

Everything older than the horizon leaves the cursor, so its size is bounded by the horizon, not by
the journal's age. The run key is ``<window>@<fingerprint>``: Dagster never launches the same key
twice for a sensor, so an unchanged window is never requested twice even if a cursor update is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from competition_pipeline.sources.journal import WindowState
from competition_pipeline.windows import HOUR, Window

CLOCK_SLACK_NS = 1_000_000_000
DEFAULT_HORIZON_HOURS = 48


@dataclass
class FollowCursor:
    watermark_ns: int | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str | None) -> FollowCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            data.get("watermark_ns"), dict(data.get("fingerprints", {})), data.get("pending", [])
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "watermark_ns": self.watermark_ns,
                "fingerprints": dict(sorted(self.fingerprints.items())),
                "pending": sorted(self.pending),
            }
        )


@dataclass(frozen=True)
class Request:
    window: Window
    fingerprint: str

    @property
    def run_key(self) -> str:
        return f"{self.window.key}@{self.fingerprint}"


@dataclass
class Plan:
    requests: list[Request]
    cursor: FollowCursor
    deferred: list[str]  # changed, but a run of the window is still queued or in progress
    out_of_range: list[str]  # hour directories outside the partitions (before start, future)


def plan(
    states: list[WindowState],
    cursor: FollowCursor,
    *,
    scan_started_ns: int,
    in_progress: set[str],
    first: Window,
    last: Window,
    horizon_hours: int = DEFAULT_HORIZON_HOURS,
) -> Plan:
    """Decide the run requests of one tick and the cursor that follows it."""
    newest = max((s.window for s in states), default=None)
    horizon = Window(newest.start - horizon_hours * HOUR) if newest else None
    pending = set(cursor.pending)
    requests: list[Request] = []
    deferred: list[str] = []
    out_of_range: list[str] = []
    fingerprints: dict[str, str] = {}
    for state in states:
        key = state.window.key
        if not first <= state.window <= last:
            out_of_range.append(key)
            continue
        known = cursor.fingerprints.get(key)
        if known is not None:
            changed = known != state.fingerprint
        else:
            changed = (
                cursor.watermark_ns is None
                or key in pending
                or state.changed_ns >= cursor.watermark_ns - CLOCK_SLACK_NS
            )
        recent = horizon is not None and state.window >= horizon
        if changed and key in in_progress:
            deferred.append(key)
            if known is not None and recent:
                fingerprints[key] = known
            continue
        if changed:
            requests.append(Request(state.window, state.fingerprint))
            fingerprints[key] = state.fingerprint
        elif recent or state.changed_ns >= scan_started_ns - CLOCK_SLACK_NS:
            # Also kept: a window whose mtime would trip the watermark rule on the next tick.
            fingerprints[key] = state.fingerprint
    next_cursor = FollowCursor(scan_started_ns, fingerprints, deferred)
    return Plan(requests, next_cursor, deferred, out_of_range)
