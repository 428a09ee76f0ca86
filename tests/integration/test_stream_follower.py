"""The open hour's follower with ``FILL_SOURCE=nats``: a run follows the stream from the stream
position committed with the window's rows, against a real nats-server with JetStream.

Asserted on what the database committed (stream position, rows, totals), never on wall time.
"""

from __future__ import annotations

import asyncio
import itertools

import nats

from competition_pipeline.defs.resources import (
    FillSourceResource,
)
from competition_pipeline.fills.stream import StreamSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import reconcile_window, window_totals
from competition_pipeline.recording.live_hour import follow_window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools.publish import publish_lines
from tests.helpers.follower import (
    follow_briefly,
    follow_in_rounds,
    kill_after,
    open_window,
    start_follower,
    wait_until,
    writing,
)
from tests.helpers.journal import T0, WINDOW, fill, line
from tests.helpers.sql import query


def _publish(stream: FillSourceResource, first: int, count: int, start_ms: int) -> None:
    lines = [line(fill(t, start_ms + t)).encode() for t in range(first, first + count)]
    asyncio.run(
        publish_lines(stream.nats_url, lines, stream=stream.stream, prefix=stream.subject_prefix)
    )


def _last_seq(stream: FillSourceResource) -> int:
    async def read() -> int:
        nc = await nats.connect(stream.nats_url)
        try:
            return (await nc.jetstream().stream_info(stream.stream)).state.last_seq
        finally:
            await nc.close()

    return asyncio.run(read())


def _position(store: CompetitionStore, window: Window, origin: str) -> int:
    """The stream sequence the window's committed loads have read up to (0: none)."""
    committed = store.committed_positions().get(window)
    if committed is None or not committed.positions:
        return 0
    return committed.positions.get(origin, {}).get("seq", 0)


def test_a_stream_follower_commits_each_round_what_was_published_with_its_position(
    stream: FillSourceResource, database_url: str
) -> None:
    """N publishes between rounds give N small loads, each reading only the messages after the
    committed stream position and committing the new position with its rows; a round with
    nothing new commits nothing."""
    _publish(stream, 1, 1, T0)
    source = stream.source()
    assert isinstance(source, StreamSource)
    fills = follow_in_rounds(
        source, database_url, WINDOW, lambda first, n: _publish(stream, first, n, T0)
    )
    store = CompetitionStore(database_url)
    assert _position(store, WINDOW, source.origin) == _last_seq(stream) == fills
    assert store.committed_positions()[WINDOW].extent == {source.origin: fills}


def test_a_changed_duplicate_published_later_is_a_conflict_the_first_version_stays(
    stream: FillSourceResource, database_url: str
) -> None:
    """The follower's incremental loads keep the loader's rules: a trade published again with
    other values after its first version was committed is recorded as a conflict, and the stored
    row stays the first version."""
    _publish(stream, 1, 2, T0)
    source = stream.source()
    store = CompetitionStore(database_url)
    store.ensure_schema()
    now = [0.0]

    async def publish_changed() -> None:
        nc = await nats.connect(stream.nats_url)
        try:
            # A new message id: JetStream does not drop it as a redelivery of trade 1.
            await nc.jetstream().publish(
                f"{stream.subject_prefix}.ETH",
                line(fill(1, T0 + 1, price="999")).encode(),
                stream=stream.stream,
                headers={"Nats-Msg-Id": "changed-1"},
            )
        finally:
            await nc.close()

    def sleep(_: float) -> None:
        now[0] += 1
        asyncio.run(publish_changed())

    loads = [
        r
        for r in follow_window(source, store, WINDOW, until=1.0, clock=lambda: now[0], sleep=sleep)
        if r is not None
    ]
    assert [(r.lines_read, r.conflicts) for r in loads] == [(2, 0), (1, 1)]
    assert query(database_url, "SELECT count(*) > 0 FROM competition_fill_conflicts") == [(True,)]
    assert query(
        database_url,
        "SELECT DISTINCT price = 1520.5 FROM competition_fill_events WHERE trade_id = 1",
    ) == [(True,)]


def _config(stream: FillSourceResource) -> dict[str, object]:
    return {
        "kind": "nats",
        "nats_url": stream.nats_url,
        "stream": stream.stream,
        "subject_prefix": stream.subject_prefix,
        "lateness_seconds": 1,
    }


def test_a_stream_follower_killed_mid_hour_is_resumed_from_its_committed_position(
    stream: FillSourceResource, database_url: str
) -> None:
    """``kill -9`` of a stream follower's process while fills are published: the next follower
    starts from the committed stream position, and the window ends exact (nothing missing,
    nothing twice)."""
    window = open_window()
    start = window.start_ms
    _publish(stream, 1, 200, start)
    source = stream.source()
    store = CompetitionStore(database_url)
    store.ensure_schema()
    follower = start_follower(database_url, _config(stream), window, FILL_SOURCE="nats")
    published = [200]

    def publish(first: int, count: int) -> None:
        _publish(stream, first, count, start)
        published.append(count)

    try:
        wait_until(lambda: _position(store, window, source.origin) == 200)
        publish(201, 100)
        wait_until(lambda: _position(store, window, source.origin) == 300)  # it follows
        trades = itertools.count(301, 5)
        with writing(lambda: publish(next(trades), 5)):
            kill_after(follower, 1.5)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert _position(store, window, source.origin) >= 300
    result = follow_briefly(database_url, _config(stream), window, 3.0)
    assert result.success
    fills = sum(published)
    assert _position(store, window, source.origin) == _last_seq(stream) == fills
    assert query(
        database_url, "SELECT count(*), count(DISTINCT trade_id) FROM competition_fill_events"
    ) == [(2 * fills, fills)]
    totals = window_totals(store, window)
    assert totals is not None
    assert (totals.lines_read, totals.rows_inserted, totals.conflicts) == (fills, 2 * fills, 0)
    check = reconcile_window(source, store, window)
    assert (check.missing, check.unexpected) == (0, 0)


def test_the_hours_close_ends_the_stream_follower_with_its_materialization_and_checks(
    stream: FillSourceResource, database_url: str
) -> None:
    """The stream follower commits while fills are published and, once its hour is closed past
    its lateness, ends with the window's final materialization (its totals) and the three
    checks evaluated for its partition."""
    window = open_window()
    start = window.start_ms
    _publish(stream, 1, 1, start)
    source = stream.source()
    trades = itertools.count(2, 3)
    with writing(lambda: _publish(stream, next(trades), 3, start), every=0.05):
        result = follow_briefly(database_url, _config(stream), window, 4.0)
    assert result.success
    events = result.get_asset_materialization_events()
    final = {k: v.value for k, v in events[-1].materialization.metadata.items()}
    assert events[-1].materialization.partition == window.key
    assert final["follower"] == "final"
    assert final["follower_loads"] > 1  # it followed: more than one load in one run
    store = CompetitionStore(database_url)
    recorded = _position(store, window, source.origin)
    assert recorded > 1
    # Fills published after the run's last read are the next run's (the sensor asks for it).
    assert final["lines_read"] == recorded
    assert final["rows_inserted"] == final["dagster/partition_row_count"] == 2 * recorded
    assert final["accounting_balanced"] is True
    evaluations = result.get_asset_check_evaluations()
    assert sorted(e.check_name for e in evaluations) == [
        "no_conflicting_duplicates",
        "reconciles_with_journal",
        "rejects_within_budget",
    ]
    assert all(e.passed and e.partition == window.key for e in evaluations)
