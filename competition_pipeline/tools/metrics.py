"""Prometheus metrics, computed at scrape time: ``competition-pipeline metrics --port 9464``.

Nothing is counted in a process that could forget it: every value is read, when Prometheus
scrapes, from where the truth is kept (the competition database's window summaries, the journal's
directory listing, the Dagster instance). So the exporter can be restarted, or run twice, and its
counters never go back. What one scrape costs, at any table size:

* ``competition_fill_windows`` (one row per recorded hour, ~8,800 a year): one aggregate over its
  summaries gives fills, rows and conflicts, plus ``competition_fill_counter_offsets`` (what
  retention and rebuilds took away: a row per retired month or rebuilt window), so the counters
  are lifetime totals that never fall (store/counters.py); one narrow read of the extents feeds
  windows-behind.
* ``competition_fill_events``: ``max(fill_ts)`` only, one probe of its ``fill_ts`` index (never a
  ``count(*)``).
* ``competition_fill_rejects``: rejects by rule, a ``GROUP BY`` over the quarantine table (it is
  small; the one read here that grows with a table).
* the journal: one directory listing per hour and one ``stat`` per segment (as a sensor tick, about
  0.3 s per 10,000 hours) plus the last 64 KiB of the newest plain segment, or at most
  ``GZ_SCRAPE_BYTES`` (8 MiB) decompressed from a closed one: a ``.gz`` cannot be read from its
  end, and a hostile one can expand without bound, so past 8 MiB its newest fill is taken from
  what was read (the lag is then a lower bound; the segment's successor, a plain segment, is
  normally the newest anyway). The journal's file rule applies (``fills.journal.open_regular``).
* the Dagster instance: the sensors' stored state (a handful of rows), one ``count`` per run status
  over the runs table's status index (bounded by the run-history pruning job), and the failed
  runs (kept by the pruning job, few).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from competition_pipeline.fills.contract import Fill, parse_line
from competition_pipeline.fills.journal import Segment, open_regular, open_segment, scan
from competition_pipeline.fills.source import MAX_LINE
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.follow import journal_behind
from competition_pipeline.store import dburl
from competition_pipeline.store.counters import SQL_COUNTERS
from competition_pipeline.store.database import CommittedWindow

DEFAULT_PORT = 9464
TAIL_BYTES = 64 * 1024
#: What one scrape decompresses of the journal's closed segments at most.
GZ_SCRAPE_BYTES = 8 * 1024 * 1024


def _tail_lines(segment: Segment, tail: int, budget: list[int]) -> list[bytes]:
    """The complete lines among the last ``tail`` bytes of a segment (decompressed for .gz, at
    most ``budget[0]`` bytes of it, which the read takes from the budget)."""
    if segment.closed:
        data, total = b"", 0
        with open_segment(segment) as handle:
            while budget[0] > 0 and (chunk := handle.read(min(1 << 20, budget[0]))):
                budget[0] -= len(chunk)
                total += len(chunk)
                data = (data + chunk)[-tail:]  # bounded: linear in what is read
        lines = data.split(b"\n")
        if budget[0] <= 0:  # stopped part way: the last piece may be a partial line
            lines.pop()
        return lines[1:] if total > tail else lines
    with open_regular(segment.path) as handle:
        start = max(0, segment.size - tail)
        handle.seek(start)
        lines = handle.read(segment.size - start).split(b"\n")
    lines.pop()  # unterminated (or empty after the last "\n")
    return lines[1:] if start else lines


def newest_journal_fill_ms(
    segments: Sequence[Segment], tail: int = TAIL_BYTES, gz_bytes: int = GZ_SCRAPE_BYTES
) -> int | None:
    """The newest fill timestamp among the last lines of the newest segment that has a fill
    (the journal is written in time order, so its tail holds the newest fills); closed segments
    are decompressed ``gz_bytes`` at most in all."""
    budget = [gz_bytes]
    for segment in reversed(segments):
        if segment.closed and budget[0] <= 0:
            break
        stamps = [
            result.timestamp_ms
            for line in _tail_lines(segment, tail, budget)
            if len(line) <= MAX_LINE and type(result := parse_line(line)) is Fill
        ]
        if stamps:
            return max(stamps)
    return None


@dataclass(frozen=True, slots=True)
class JournalState:
    windows_behind: int
    behind_seconds: float  # the longest a behind window has gone without a commit
    newest_fill_ms: int | None


def journal_state(
    root: Path,
    committed: Mapping[Window, CommittedWindow],
    now: float,
    retired: frozenset[Window] | set[Window] = frozenset(),
) -> JournalState:
    """Windows behind (the sensors' rule, ``follow.journal_behind``; a retired window is never
    behind: the sensors never ask for it), how long the worst has gone uncommitted, and the
    newest fill, from one listing of the journal. A window behind has gone without a commit since
    its last commit, or, never committed, since its oldest segment was last written."""
    states, _ = scan(root)
    behind, behind_seconds, newest_segments = 0, 0.0, []
    for state in states:
        last = committed.get(state.window)
        if state.window not in retired and journal_behind(state, last) is not None:
            behind += 1
            since = (
                dt.datetime.fromisoformat(last.recorded_at).timestamp()
                if last is not None
                else min(s.mtime_ns for s in state.segments) / 1e9
            )
            behind_seconds = max(behind_seconds, now - since)
        newest_segments = list(state.segments)
    return JournalState(behind, behind_seconds, newest_journal_fill_ms(newest_segments))


_SQL_RETIRED = "SELECT window_start FROM competition_fill_retired"


def _committed(conn: psycopg.Connection) -> dict[Window, CommittedWindow]:
    rows = conn.execute(
        "SELECT window_start, summary->'positions', extent, recorded_at"
        " FROM competition_fill_windows"
    ).fetchall()
    return {
        Window(start): CommittedWindow(positions, extent, at.isoformat())
        for start, positions, extent, at in rows
    }


class FillMetricsCollector(Collector):
    """A custom collector: every scrape reads the database, the journal and the instance."""

    def __init__(
        self,
        database_url: str,
        journal_root: str | None,
        instance: Callable[[], object] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._url = database_url
        self._journal = Path(journal_root) if journal_root else None
        self._instance = instance
        self._now = now

    def collect(self) -> Iterator[Metric]:
        now = self._now()
        with psycopg.connect(dburl.libpq(self._url)) as conn:  # connect_timeout: dburl
            yield from self._database_metrics(conn, now)
        if self._instance is not None:
            yield from instance_metrics(self._instance(), now)

    def _database_metrics(self, conn: psycopg.Connection, now: float) -> Iterator[Metric]:
        # Lifetime totals: the tables' sums plus what retention and rebuilds took from them
        # (store/counters.py), so no counter ever falls; what the table holds now is a gauge.
        totals: dict[tuple[str, str], int] = {
            (metric, label): value for metric, label, value in conn.execute(SQL_COUNTERS)
        }
        yield _counter(
            "competition_fills_recorded", "Fills recorded (messages).", totals.get(("fills", ""), 0)
        )
        yield _counter(
            "competition_fill_rows",
            "Rows ever recorded into competition_fill_events (none retired or rebuilt away).",
            totals.get(("rows", ""), 0),
        )
        yield _counter(
            "competition_fill_conflicts",
            "Conflicting duplicates recorded.",
            totals.get(("conflicts", ""), 0),
        )
        rejects = CounterMetricFamily(
            "competition_fill_rejects", "Lines quarantined, by rule.", labels=["reason"]
        )
        for (metric, label), value in sorted(totals.items()):
            if metric == "rejects":
                rejects.add_metric([label], value)
        yield rejects
        (stored,) = conn.execute(
            "SELECT coalesce(sum((summary->'stored'->>'rows')::bigint), 0)"
            " FROM competition_fill_windows"
        ).fetchone()
        yield _gauge("competition_fill_rows_stored", "Rows in competition_fill_events now.", stored)
        (newest,) = conn.execute("SELECT max(fill_ts) FROM competition_fill_events").fetchone()
        newest_s = newest.timestamp() if newest is not None else None
        if newest_s is not None:
            yield _gauge(
                "competition_fill_staleness_seconds",
                "Now minus the newest recorded fill.",
                now - newest_s,
            )
        if self._journal is None or not self._journal.is_dir():
            return
        retired = {Window(start) for (start,) in conn.execute(_SQL_RETIRED)}
        state = journal_state(self._journal, _committed(conn), now, retired)
        yield _gauge(
            "competition_fill_windows_behind",
            "Windows whose journal is ahead of what the database committed.",
            state.windows_behind,
        )
        yield _gauge(
            "competition_fill_behind_seconds",
            "The longest a window behind has gone without a commit (0: none behind).",
            state.behind_seconds,
        )
        if state.newest_fill_ms is not None:
            recorded = newest_s if newest_s is not None else 0.0
            yield _gauge(
                "competition_fill_lag_seconds",
                "Newest fill in the journal minus the newest recorded fill.",
                max(0.0, state.newest_fill_ms / 1000 - recorded),
            )


def instance_metrics(instance, now: float) -> Iterator[Metric]:
    """Failed window recordings, sensor tick age, runs by status and the fill asset's freshness,
    from the Dagster instance (read by ``defs/instance_metrics.py``)."""
    from competition_pipeline.defs.instance_metrics import FRESHNESS_STATES, read_instance_metrics

    state = read_instance_metrics(instance)
    yield _counter(
        "competition_fill_record_failures",
        "Failed window recordings (failed runs of competition_fill_events; not rebuilds or"
        " other jobs).",
        state.record_failures,
    )
    age = GaugeMetricFamily(
        "competition_sensor_last_tick_age_seconds",
        "Seconds since the sensor last ticked.",
        labels=["sensor"],
    )
    running = GaugeMetricFamily(
        "competition_sensor_running", "1 when the sensor is running.", labels=["sensor"]
    )
    for sensor in state.sensors:
        running.add_metric([sensor.name], 1.0 if sensor.running else 0.0)
        if sensor.last_tick:
            age.add_metric([sensor.name], now - sensor.last_tick)
    yield age
    yield running
    runs = GaugeMetricFamily(
        "competition_dagster_runs", "Runs in the instance, by status.", labels=["status"]
    )
    for status, count in state.runs_by_status.items():
        runs.add_metric([status], count)
    yield runs
    freshness = GaugeMetricFamily(
        "competition_fill_freshness_state",
        "1 for the current freshness state of competition_fill_events (its FreshnessPolicy,"
        " evaluated by the daemon), 0 for the others.",
        labels=["state"],
    )
    for name in FRESHNESS_STATES:
        freshness.add_metric([name], 1.0 if name == state.freshness else 0.0)
    yield freshness


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def registry(
    database_url: str, journal_root: str | None, instance: Callable[[], object] | None
) -> CollectorRegistry:
    """A registry with only the pipeline's collector (no process or platform metrics)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(FillMetricsCollector(database_url, journal_root, instance))
    return collectors


def serve(host: str, port: int, *, use_instance: bool = True) -> tuple[object, object]:
    """Start the exporter's HTTP server in a thread; the Dagster instance is ``DAGSTER_HOME``'s.
    Returns the server and its thread (``server.shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    url = os.environ.get("COMPETITION_DATABASE_URL")
    if not url:
        raise SystemExit("COMPETITION_DATABASE_URL is not set")
    instance_factory = None
    if use_instance:
        from competition_pipeline.defs.instance_metrics import open_instance

        cached: list = []

        def instance_factory():  # one instance for the exporter's life, opened on first scrape
            if not cached:
                cached.append(open_instance())
            return cached[0]

    return start_http_server(
        port,
        addr=host,
        registry=registry(url, os.environ.get("FILL_JOURNAL_DIR"), instance_factory),
    )


def samples(text: str) -> dict[str, float]:
    """Parse an exposition into ``{'name{labels}': value}`` (for tests and operators' scripts)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
