"""Hourly UTC windows: the partition key format shared with Dagster, and window bounds.

A window is the half-open interval ``[start, end)`` of fill event time (contract, section 5); its
key is ``YYYY-MM-DD-HH:00``, the format of Dagster's ``HourlyPartitionsDefinition``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

KEY_FORMAT = "%Y-%m-%d-%H:%M"
HOUR = dt.timedelta(hours=1)
_MS = dt.timedelta(milliseconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def utc_from_ms(timestamp_ms: int) -> dt.datetime:
    """The UTC instant of a fill timestamp (milliseconds since the epoch), exactly."""
    return _EPOCH + timestamp_ms * _MS


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """One hourly window of fill event time, ``[start, start + 1h)`` in UTC."""

    start: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("window start must be timezone-aware")
        utc = self.start.astimezone(dt.UTC)
        if utc != utc.replace(minute=0, second=0, microsecond=0):
            raise ValueError(f"window start {self.start.isoformat()} is not on the hour")
        object.__setattr__(self, "start", utc)

    @classmethod
    def from_key(cls, key: str) -> Window:
        try:
            start = dt.datetime.strptime(key, KEY_FORMAT)
        except ValueError:
            start = None
        # strptime also takes unpadded fields ("2026-3-31-4:00"): only the canonical key is one.
        if start is None or start.strftime(KEY_FORMAT) != key:
            raise ValueError(f"not an hourly window key (YYYY-MM-DD-HH:00): {key!r}")
        return cls(start.replace(tzinfo=dt.UTC))

    @classmethod
    def containing(cls, instant: dt.datetime) -> Window:
        utc = instant.astimezone(dt.UTC)
        return cls(utc.replace(minute=0, second=0, microsecond=0))

    @classmethod
    def containing_ms(cls, timestamp_ms: int) -> Window:
        return cls.containing(utc_from_ms(timestamp_ms))

    @property
    def end(self) -> dt.datetime:
        return self.start + HOUR

    @property
    def key(self) -> str:
        return self.start.strftime(KEY_FORMAT)

    @property
    def start_ms(self) -> int:
        return (self.start - _EPOCH) // _MS

    @property
    def end_ms(self) -> int:
        return (self.end - _EPOCH) // _MS

    def contains_ms(self, timestamp_ms: int) -> bool:
        return self.start_ms <= timestamp_ms < self.end_ms

    def misfiled(self, timestamp_ms: int) -> str:
        """The reject reason of a fill filed under this window whose time is outside it: a fill
        belongs to the window of its event time (contract, section 5)."""
        instant = utc_from_ms(timestamp_ms)
        return (
            f"misfiled: timestamp {timestamp_ms} ({instant:%Y-%m-%dT%H:%M:%S.%f}Z) is outside the"
            f" window {self.key} it is filed under"
        )

    def __str__(self) -> str:
        return self.key


def windows_between(start: dt.datetime, end: dt.datetime) -> list[Window]:
    """The hourly windows covering ``[start, end)``, in order (a backfill's key range)."""
    first = Window.containing(start)
    windows = []
    current = first.start
    while current < end:
        windows.append(Window(current))
        current += HOUR
    return windows


def still_open(windows: list[Window], now: dt.datetime, lateness: dt.timedelta) -> list[Window]:
    """The windows that may still be written at ``now``: the hour in progress, and an hour closed
    less than ``lateness`` ago (its follower commits late fills until then)."""
    return [window for window in windows if window.end + lateness > now]
