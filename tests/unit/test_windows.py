"""Hourly UTC windows (fill-journal.md, section 5). No database, no Dagster."""

from __future__ import annotations

import datetime as dt

import pytest

from competition_pipeline.fills.windows import Window, windows_between

UTC = dt.UTC
HOUR_MS = 3_600_000


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def ms(instant: dt.datetime) -> int:
    delta = instant - utc(1970, 1, 1)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def test_from_key_parses_the_hour_in_utc() -> None:
    window = Window.from_key("2026-03-31-14:00")
    assert window.start == utc(2026, 3, 31, 14)
    assert window.start.tzinfo is not None and window.start.utcoffset() == dt.timedelta(0)
    assert window.end == utc(2026, 3, 31, 15)


@pytest.mark.parametrize(
    "key",
    [
        "2026-03-31-14:00",
        "1970-01-01-00:00",
        "2024-02-29-23:00",
        "2025-12-31-23:00",
        "2026-01-01-00:00",
        "2000-06-15-09:00",
    ],
)
def test_key_round_trip(key: str) -> None:
    window = Window.from_key(key)
    assert window.key == key
    assert str(window) == key
    assert Window.from_key(window.key) == window


@pytest.mark.parametrize(
    "key",
    [
        "",
        "2026-03-31",
        "2026-03-31-14",
        "2026-03-31T14:00",
        "2026-03-31 14:00",
        "2026-03-31-14:00:00",
        "2026-03-31-14:00Z",
        " 2026-03-31-14:00",
        "2026-03-31-14:00 ",
        "2026-03-31-14:30",
        "2026-03-31-14:59",
        "2026-03-31-24:00",
        "2026-02-30-00:00",
        "2025-02-29-00:00",
        "2026-13-01-00:00",
        "2026-00-10-00:00",
        "26-03-31-14:00",
        "2026/03/31-14:00",
        "hour",
    ],
)
def test_bad_key_raises_value_error(key: str) -> None:
    with pytest.raises(ValueError):
        Window.from_key(key)


@pytest.mark.parametrize("key", ["2026-3-31-14:00", "2026-03-31-4:00", "2026-03-31-14:0"])
def test_non_canonical_key_raises_value_error(key: str) -> None:
    with pytest.raises(ValueError):
        Window.from_key(key)


def test_window_start_must_be_aware_and_on_the_hour() -> None:
    with pytest.raises(ValueError):
        Window(dt.datetime(2026, 3, 31, 14))
    for start in (
        utc(2026, 3, 31, 14, 1),
        utc(2026, 3, 31, 14, 0, 1),
        utc(2026, 3, 31, 14, 0, 0, 1),
    ):
        with pytest.raises(ValueError):
            Window(start)


def test_window_start_in_another_zone_is_normalised_to_utc() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    window = Window(dt.datetime(2026, 3, 31, 16, tzinfo=plus_two))
    assert window.start == utc(2026, 3, 31, 14)
    assert window.start.utcoffset() == dt.timedelta(0)
    assert window.key == "2026-03-31-14:00"
    assert window == Window.from_key("2026-03-31-14:00")


def test_window_with_a_half_hour_zone_not_on_the_utc_hour_is_rejected() -> None:
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    with pytest.raises(ValueError):
        Window(dt.datetime(2026, 3, 31, 14, tzinfo=india))


def test_start_and_end_ms() -> None:
    window = Window.from_key("2026-03-31-14:00")
    assert window.start_ms == ms(utc(2026, 3, 31, 14)) == 1_774_965_600_000
    assert window.end_ms == window.start_ms + HOUR_MS
    assert type(window.start_ms) is int and type(window.end_ms) is int
    epoch = Window.from_key("1970-01-01-00:00")
    assert (epoch.start_ms, epoch.end_ms) == (0, HOUR_MS)


def test_contains_ms_is_half_open() -> None:
    window = Window.from_key("2026-03-31-14:00")
    start, end = window.start_ms, window.end_ms
    assert not window.contains_ms(start - 1)
    assert window.contains_ms(start)
    assert window.contains_ms(start + 1)
    assert window.contains_ms(end - 1)
    assert not window.contains_ms(end)
    assert not window.contains_ms(end + 1)


def test_containing_ms() -> None:
    window = Window.from_key("2026-03-31-14:00")
    assert Window.containing_ms(window.start_ms) == window
    assert Window.containing_ms(window.start_ms + 1) == window
    assert Window.containing_ms(window.end_ms - 1) == window
    assert Window.containing_ms(window.end_ms) == Window.from_key("2026-03-31-15:00")
    assert Window.containing_ms(window.start_ms - 1) == Window.from_key("2026-03-31-13:00")
    assert Window.containing_ms(0).key == "1970-01-01-00:00"
    assert Window.containing_ms(-1).key == "1969-12-31-23:00"


def test_containing_ms_of_the_contract_example() -> None:
    # 1763985600123 ms = 2025-11-24T12:00:00.123Z
    window = Window.containing_ms(1763985600123)
    assert window.key == "2025-11-24-12:00"
    assert window.contains_ms(1763985600123)


def test_containing_agrees_with_contains_ms() -> None:
    base = Window.from_key("2026-03-31-23:00").start_ms
    for offset in range(-3 * HOUR_MS, 3 * HOUR_MS, 599_999):
        instant = base + offset
        window = Window.containing_ms(instant)
        assert window.contains_ms(instant)
        assert window.start_ms <= instant < window.end_ms


def test_containing_converts_other_zones() -> None:
    minus_five = dt.timezone(dt.timedelta(hours=-5))
    window = Window.containing(dt.datetime(2026, 3, 31, 22, 30, tzinfo=minus_five))
    assert window.key == "2026-04-01-03:00"


def test_windows_are_ordered_by_start() -> None:
    keys = ["2026-03-31-14:00", "2026-03-30-23:00", "2026-03-31-02:00"]
    ordered = sorted(Window.from_key(key) for key in keys)
    assert [w.key for w in ordered] == sorted(keys)


def test_windows_between_on_the_hour() -> None:
    windows = windows_between(utc(2026, 3, 31, 14), utc(2026, 3, 31, 17))
    assert [w.key for w in windows] == [
        "2026-03-31-14:00",
        "2026-03-31-15:00",
        "2026-03-31-16:00",
    ]


def test_windows_between_off_the_hour_covers_both_ends() -> None:
    windows = windows_between(utc(2026, 3, 31, 14, 30), utc(2026, 3, 31, 16, 0, 0, 1))
    assert [w.key for w in windows] == [
        "2026-03-31-14:00",
        "2026-03-31-15:00",
        "2026-03-31-16:00",
    ]


def test_windows_between_crosses_midnight_contiguously() -> None:
    windows = windows_between(utc(2026, 2, 28, 22), utc(2026, 3, 1, 2))
    assert [w.key for w in windows] == [
        "2026-02-28-22:00",
        "2026-02-28-23:00",
        "2026-03-01-00:00",
        "2026-03-01-01:00",
    ]
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.end == after.start


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (utc(2026, 3, 31, 14), utc(2026, 3, 31, 14)),
        (utc(2026, 3, 31, 15), utc(2026, 3, 31, 14)),
    ],
)
def test_windows_between_empty_range(start: dt.datetime, end: dt.datetime) -> None:
    assert windows_between(start, end) == []


def test_windows_between_a_single_instant_inside_an_hour() -> None:
    start = utc(2026, 3, 31, 14, 10)
    assert windows_between(start, start + dt.timedelta(milliseconds=1)) == [
        Window.from_key("2026-03-31-14:00")
    ]
