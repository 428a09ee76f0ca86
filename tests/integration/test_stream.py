"""The live source: NATS JetStream, against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import nats
import pytest

from competition_pipeline.defs.follow import build_follow_sensors
from competition_pipeline.defs.resources import (
    CompetitionDatabase,
    FillSourceResource,
    RecordingPolicy,
)
from competition_pipeline.defs.runs import error_cause
from competition_pipeline.fills.windows import HOUR, Window
from competition_pipeline.tools.publish import journal_lines, publish_lines, subject_and_id
from tests.helpers.journal import KEY, T0, WINDOW, fill, line
from tests.helpers.location import SETTINGS, competition_fill_events
from tests.helpers.runs import materialize, metadata
from tests.helpers.sql import query


def publish(stream: FillSourceResource, messages: list) -> None:
    lines = [line(m).encode() for m in messages]
    asyncio.run(
        publish_lines(stream.nats_url, lines, stream=stream.stream, prefix=stream.subject_prefix)
    )


def run(database_url: str, source: FillSourceResource, key: str = KEY, **kwargs):
    return dg.materialize(
        [competition_fill_events],
        partition_key=key,
        resources={
            "database": CompetitionDatabase(url=database_url),
            "fill_source": source,
            "policy": RecordingPolicy(),
        },
        **kwargs,
    )


def rows(database_url: str) -> list[tuple]:
    return query(
        database_url,
        "SELECT trade_id, wallet, role, side, counterparty, symbol, price, size, notional, fee,"
        " realized_pnl, fill_ts, window_start FROM competition_fill_events ORDER BY 1, 2",
    )


def test_the_same_journal_from_files_and_from_the_stream_gives_identical_tables(
    stream, database_url: str, pg_admin_url: str, journal: Path
) -> None:
    from competition_pipeline.tools import embedded, simulate

    simulate.write_hour(journal, WINDOW, 500)
    materialize(database_url, journal)
    publish_all = [json.loads(x) for x in _journal_text(journal)]
    # Bad lines too: published as they are, quarantined the same way.
    publish(stream, publish_all + ["not json"])
    other = f"cp_test_{uuid.uuid4().hex[:12]}"
    embedded.create_database(pg_admin_url, other)
    try:
        stream_db = embedded.database_url(pg_admin_url, other)
        meta = metadata(run(stream_db, stream))
        assert rows(stream_db) == rows(database_url)
        assert meta["rejects"] == 0 and meta["stream_complete"] is True
        # A line that cannot be parsed belongs to the window of its publish time (now).
        now = Window.containing_ms(int(time.time() * 1000)).key
        assert metadata(run(stream_db, stream, now))["rejects"] == 1
    finally:
        embedded.drop_database(pg_admin_url, other)


def _journal_text(journal: Path) -> list[str]:
    return [raw.decode() for raw in journal_lines(journal, [WINDOW])]


def test_window_boundaries_are_exact(stream, database_url: str) -> None:
    before, after = Window(WINDOW.start - HOUR), Window(WINDOW.start + HOUR)
    publish(
        stream,
        [fill(1, T0 - 1), fill(2, T0), fill(3, WINDOW.end_ms - 1), fill(4, WINDOW.end_ms)],
    )
    for key in (before.key, KEY, after.key):
        run(database_url, stream, key)
    by_window = query(
        database_url,
        "SELECT window_start, array_agg(DISTINCT trade_id ORDER BY trade_id)"
        " FROM competition_fill_events GROUP BY 1 ORDER BY 1",
    )
    assert by_window == [(before.start, [1]), (WINDOW.start, [2, 3]), (after.start, [4])]


def test_duplicates_are_dropped_and_redelivery_is_recorded_once(stream, database_url: str) -> None:
    messages = [fill(10, T0 + 1), fill(11, T0 + 2)]
    publish(stream, messages)
    publish(stream, messages)  # the same Nats-Msg-Id: dropped by the stream
    assert subject_and_id(line(messages[0]).encode(), "engine.fills") == ("engine.fills.BTC", "10")
    first = metadata(run(database_url, stream))
    assert first["lines_read"] == 2  # the stream kept one message of each pair
    again = metadata(run(database_url, stream))  # delivered again: recorded once
    assert (first["rows_inserted"], again["rows_inserted"], again["rows_already_present"]) == (
        4,
        0,
        4,
    )
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(4,)]


def test_an_unreachable_stream_fails_the_run_with_a_clear_message(database_url: str) -> None:
    source = FillSourceResource(kind="nats", nats_url="nats://127.0.0.1:1")
    result = run(database_url, source, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = error_cause(failure.step_failure_data.error).message
    assert "cannot reach the fill stream at nats://127.0.0.1:1" in text and f"window {KEY}" in text


def test_the_stream_sensor_requests_every_window_until_its_stream_position_is_committed(
    stream, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window stays requested until a committed load covers the newest message the stream
    holds for it: a failed or lost run does not make it forgotten, a late message reopens it."""
    no_backoff = replace(SETTINGS, retry_backoff_seconds=0.0, retry_backoff_max_seconds=0.0)
    _, fill_stream_sensor = build_follow_sensors(no_backoff)
    now = Window.containing_ms(int(time.time() * 1000))
    older = Window(now.start - 3 * HOUR)
    publish(stream, [fill(20, older.start_ms + 5), fill(21, now.start_ms + 5)])
    resources = {"fill_source": stream, "database": CompetitionDatabase(url=database_url)}

    def tick(instance, cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = fill_stream_sensor(context)
        return sorted(r.partition_key for r in result.run_requests), result.cursor

    with dg.instance_for_test() as instance:
        requested, cursor = tick(instance, None)
        assert requested == sorted([older.key, now.key])
        # Only the older window's run commits; the other's run "failed": asked for again.
        run(database_url, stream, key=older.key)
        requested, cursor = tick(instance, cursor)
        assert requested == [now.key]
        run(database_url, stream, key=now.key)
        assert tick(instance, cursor)[0] == []
        publish(stream, [fill(22, older.start_ms + 9)])  # a late fill for the older hour
        requested, cursor = tick(instance, cursor)
        assert requested == [older.key]
        # The cursor lost: the stream is scanned again, the committed state decides.
        assert tick(instance, None)[0] == [older.key]


def test_a_window_older_than_the_retention_fails_and_says_so(stream, database_url: str) -> None:
    publish(stream, [fill(30, T0 + 1), fill(31, T0 + 2)])

    async def purge_first() -> None:
        nc = await nats.connect(stream.nats_url)
        try:
            await nc.jetstream().delete_msg(stream.stream, 1)
        finally:
            await nc.close()

    asyncio.run(purge_first())
    earlier = Window(WINDOW.start - HOUR)
    result = run(database_url, stream, earlier.key, raise_on_error=False)
    assert not result.success
    text = str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)
    assert "oldest message the stream" in text and "FILL_SOURCE=journal" in text
