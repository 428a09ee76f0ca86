"""Migrations and the monthly partitioned ``competition_fill_events``, on a real PostgreSQL.

The upgrade test runs the previous release (commit 76b7974, checked out with ``git archive``) with
its own code in a subprocess, then upgrades that database with this release's
``competition-pipeline schema``. The others record windows through Dagster's ``materialize``.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import psycopg
import pytest

from competition_pipeline.fills.windows import Window
from competition_pipeline.store import dburl, months, schema
from competition_pipeline.store.database import CompetitionStore, StoreError
from competition_pipeline.store.standings import Competitions
from tests.helpers.environment import REPO
from tests.helpers.journal import W1, W2, append, fill, line, write_segment
from tests.helpers.runs import materialize, metadata
from tests.helpers.sql import execute, query

PREVIOUS_RELEASE = "76b7974"
OCT = Window.from_key("2026-03-31-23:00")  # the last hour of March 2026
NOV = Window.from_key("2026-04-01-00:00")  # the first hour of April 2026
MS = 60_000


def partitions(url: str) -> dict[str, int]:
    """Rows per partition of competition_fill_events (every attached partition, empty ones too)."""
    with psycopg.connect(dburl.libpq(url)) as conn:
        names = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'competition_fill_events'::regclass"
        ).fetchall()
        return {
            n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]  # noqa: S608
            for (n,) in names
        }


def test_a_new_database_is_created_at_head_and_partitioned(empty_database_url: str) -> None:
    store = CompetitionStore(empty_database_url)
    applied = store.ensure_schema()
    assert [r.split(" ")[0] for r in applied] == [
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006_live_hour_leases",
        "0007_window_totals",
        "0008_least_privilege",
    ]
    assert store.ensure_schema() == []  # at head: nothing to do
    assert query(empty_database_url, "SELECT version_num FROM alembic_version") == [
        (schema.head(),)
    ]
    kinds = dict(
        query(
            empty_database_url,
            "SELECT relname, relkind::text FROM pg_class WHERE relname IN"
            " ('competition_fill_events', 'competition_fill_keys')",
        )
    )
    assert kinds == {"competition_fill_events": "p", "competition_fill_keys": "p"}
    this_month = months.first_day(dt.datetime.now(dt.UTC).date())
    expected = {
        f"competition_fill_events_{d:%Y_%m}" for d in (this_month, months.first_day(this_month, 1))
    }
    assert set(partitions(empty_database_url)) == expected


def test_windows_across_a_month_boundary_and_a_conflict_in_another_month(
    database_url: str, journal: Path
) -> None:
    CompetitionStore(database_url).ensure_schema()
    assert not {"competition_fill_events_2026_03", "competition_fill_events_2026_04"} & set(
        partitions(database_url)
    )
    last = OCT.start_ms + 60 * MS - 1  # 23:59:59.999, the last instant of October
    oct_segment = write_segment(
        journal, OCT, "a.jsonl", [fill(1, OCT.start_ms), fill(2, OCT.start_ms + MS), fill(3, last)]
    )
    # A month whose partition did not exist: the load creates it first (fast path: 6 new rows).
    meta = metadata(materialize(database_url, journal, OCT.key))
    assert (meta["rows_inserted"], meta["rows_already_present"], meta["conflicts"]) == (6, 0, 0)
    assert partitions(database_url)["competition_fill_events_2026_03"] == 6

    # November's first hour: a new fill, and trade 3 again with its fill time in November. The
    # registry finds the October version: a conflict, never a second row.
    write_segment(
        journal,
        NOV,
        "b.jsonl",
        [fill(4, NOV.start_ms), fill(3, NOV.start_ms + 500)],
    )
    meta = metadata(materialize(database_url, journal, NOV.key))
    assert (meta["rows_inserted"], meta["conflicts"]) == (2, 1)  # one message, two rows
    assert partitions(database_url)["competition_fill_events_2026_04"] == 2
    assert query(
        database_url,
        "SELECT trade_id, differing_fields FROM competition_fill_conflicts ORDER BY wallet",
    ) == [(3, "fill_ts"), (3, "fill_ts")]
    assert query(
        database_url,
        "SELECT count(*), min(fill_ts) FROM competition_fill_events WHERE trade_id = 3",
    ) == [(2, OCT.end - dt.timedelta(milliseconds=1))]

    # A late fill into October (closed since an hour), next to a repeat of a recorded one: the
    # careful path inserts the new rows only, into October's partition.
    append(
        oct_segment,
        line(fill(5, OCT.start_ms + 30 * MS)) + "\n" + line(fill(1, OCT.start_ms)) + "\n",
    )
    meta = metadata(materialize(database_url, journal, OCT.key))
    # Only the appended lines are read (the segment's committed offset): fill 5 new, fill 1 there.
    assert (meta["rows_inserted"], meta["rows_already_present"]) == (2, 2)
    assert partitions(database_url)["competition_fill_events_2026_03"] == 8
    # Re-recording both windows in full inserts nothing; keys and rows stay one per key.
    for window in (OCT, NOV):
        with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
            conn.execute(
                "DELETE FROM competition_fill_windows WHERE window_start = %s", (window.start,)
            )
        assert metadata(materialize(database_url, journal, window.key))["rows_inserted"] == 0
    assert query(database_url, "SELECT count(*) FROM competition_fill_keys") == [(10,)]
    assert query(
        database_url,
        "SELECT count(*) FROM (SELECT DISTINCT trade_id, wallet FROM competition_fill_events) k",
    ) == [(10,)]


def test_a_deleted_row_is_restored_by_a_rerun_despite_its_registered_key(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, OCT, "a.jsonl", [fill(1, OCT.start_ms), fill(2, OCT.start_ms + MS)])
    assert metadata(materialize(database_url, journal, OCT.key))["rows_inserted"] == 4
    with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
        conn.execute(
            "DELETE FROM competition_fill_events WHERE trade_id = 2 AND wallet = %s", (W1,)
        )
    meta = metadata(materialize(database_url, journal, OCT.key))
    assert (meta["rows_inserted"], meta["rows_already_present"]) == (1, 3)
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(4,)]
    # The hand took the row out of the table, not out of the window's totals: the repair adds
    # nothing to them, and they are the rows' again.
    assert CompetitionStore(database_url).totals_mismatches(OCT) == []


def test_per_window_and_standings_queries_read_one_partition(
    database_url: str, journal: Path
) -> None:
    CompetitionStore(database_url).ensure_schema()
    for window in (OCT, NOV):
        write_segment(journal, window, "a.jsonl", [fill(window.start_ms // 1000, window.start_ms)])
        materialize(database_url, journal, window.key)
    params = {"window_start": NOV.start, "window_end": NOV.end}
    from competition_pipeline.store.digest import SQL_STORED_DIGEST
    from competition_pipeline.store.load import _SQL_STORED_ROWS

    # The load's count and the reconciliation's digest of the window's stored rows.
    for statement in (_SQL_STORED_ROWS, SQL_STORED_DIGEST):
        with psycopg.connect(dburl.libpq(database_url)) as conn:
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params))
        scanned = {p for p in partitions(database_url) if p in plan}
        assert scanned == {"competition_fill_events_2026_04"}, plan

    competitions = Competitions(CompetitionStore(database_url))
    competitions.create("nov", "April", NOV.start, NOV.end, "pnl")
    competitions.register("nov", W1)
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        from competition_pipeline.store.standings import _REPLACE, period_params

        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + _REPLACE,
                period_params(conn, "nov"),
            )
        )
        conn.rollback()
    scanned = {p for p in partitions(database_url) if p in plan}
    assert scanned == {"competition_fill_events_2026_04"}, plan


def test_schema_behind_head_names_the_missing_revision_to_a_role_without_ddl(
    empty_database_url: str,
) -> None:
    role = f"nodll_{os.getpid()}"
    database = dburl.parse(empty_database_url).database
    store = CompetitionStore(empty_database_url)
    with psycopg.connect(dburl.libpq(empty_database_url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}")
    try:
        # The database as the previous release left it: stamped at the baseline only.
        from alembic import command

        engine = store.engine()
        with engine.begin() as conn:
            command.upgrade(schema._config(conn), "0001")
            conn.exec_driver_sql("GRANT SELECT ON alembic_version TO PUBLIC")
        engine.dispose()
        url = dburl.parse(empty_database_url).set(username=role, password=None)
        recorder = CompetitionStore(url.render_as_string(hide_password=False))
        with pytest.raises(StoreError) as raised:
            recorder.ensure_schema()
        message = str(raised.value)
        assert "at revision 0001" in message and "0002 (Monthly partitions" in message
        assert "competition-pipeline schema" in message
        # The owner's upgrade then succeeds and the role passes the check without DDL.
        assert store.ensure_schema() == [
            "0002 (Monthly partitions of competition_fill_events on"
            " fill_ts; the key registry competition_fill_keys.)",
            "0003 (Changing recorded history: rebuilds with their superseded rows, retired"
            " windows, counter offsets.)",
            "0004 (Typed revisions: a superseded row's columns in competition_fill_revisions,"
            " not one jsonb.)",
            "0005 (Standings say up to which fill they are: ``through_fill_ts`` and"
            " ``through_trade_id``.)",
            "0006_live_hour_leases (The open hour's follower holds a lease:"
            " ``competition_fill_followers``, one row per hour.)",
            "0007_window_totals (Per-window totals for the standings; the (wallet, fill_ts)"
            " index dropped.)",
            "0008_least_privilege (``competition_create_month`` is executable only by whom"
            " grants.sql names, not by PUBLIC.)",
        ]
        assert recorder.ensure_schema() == []
    finally:
        with psycopg.connect(dburl.libpq(empty_database_url), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_retention_drops_an_old_month_and_refuses_one_a_running_competition_covers(
    database_url: str, journal: Path, tmp_path: Path
) -> None:
    store = CompetitionStore(database_url)
    store.ensure_schema()
    for window in (OCT, NOV):
        write_segment(journal, window, "a.jsonl", [fill(window.start_ms // 1000, window.start_ms)])
        materialize(database_url, journal, window.key)
    # A competition running now that started in April 2026 keeps November.
    now = dt.datetime.now(dt.UTC)
    competitions = Competitions(store)
    competitions.create("long", "Long", NOV.start, now + dt.timedelta(days=30), "volume")
    before = partitions(database_url)

    dry = months.retire(store, 3, dry_run=True)
    assert dry.dropped == ["competition_fill_events_2026_03"]
    assert partitions(database_url) == before

    result = months.retire(store, 3, archive_dir=tmp_path / "archive")
    assert result.dropped == ["competition_fill_events_2026_03"]
    assert result.refused == {"competition_fill_events_2026_04": ["long"]}
    after = partitions(database_url)
    assert (
        "competition_fill_events_2026_03" not in after
        and after["competition_fill_events_2026_04"] == 2
    )
    assert query(database_url, "SELECT to_regclass('competition_fill_events_2026_03')") == [(None,)]
    # Its keys and window bookkeeping went too; November's stayed.
    assert query(database_url, "SELECT count(*) FROM competition_fill_keys") == [(2,)]
    assert query(database_url, "SELECT window_start FROM competition_fill_windows") == [
        (NOV.start,)
    ]
    import gzip

    archive = Path(result.archived["competition_fill_events_2026_03"])
    lines = gzip.decompress(archive.read_bytes()).decode().splitlines()
    assert lines[0].startswith("trade_id,wallet,") and len(lines) == 3
    # Retired stays retired: the journal still holds October, but a run of it is refused with
    # what to do (the sensor never asks for it: test_sensor.py); every hour of March is retired.
    assert query(
        database_url,
        "SELECT count(*), min(window_start), max(window_start) FROM competition_fill_retired",
    ) == [(31 * 24, dt.datetime(2026, 3, 1, tzinfo=dt.UTC), OCT.start)]
    run = materialize(database_url, journal, OCT.key, raise_on_error=False)
    assert not run.success
    (failure,) = [e for e in run.all_node_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "retired by competition_fill_retention_job" in message
    assert f"competition-pipeline rebuild --from {OCT.key} --to {OCT.key}" in message
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2,)]
    # An explicit, audited rebuild restores it (its keys went with the month: the rows are new).
    from competition_pipeline.fills.journal import JournalSource
    from competition_pipeline.recording.rebuild import rebuild_windows

    restored = rebuild_windows(JournalSource(journal), store, [OCT], apply=True, reason="restore")
    assert (restored.windows[0].added, restored.windows[0].retired) == (2, True)
    assert query(database_url, "SELECT count(*) FROM competition_fill_retired") == [(31 * 24 - 1,)]
    assert metadata(materialize(database_url, journal, OCT.key))["unchanged"] is True


def test_months_job_creates_months_ahead(database_url: str) -> None:
    store = CompetitionStore(database_url)
    store.ensure_schema()
    created = months.create_ahead(store, 2, today=dt.date(2030, 1, 15))
    assert created == [dt.date(2030, 1, 1), dt.date(2030, 2, 1), dt.date(2030, 3, 1)]
    assert months.create_ahead(store, 2, today=dt.date(2030, 1, 15)) == []
    assert "competition_fill_events_2030_03" in partitions(database_url)


def _previous_release(tmp_path: Path) -> Path:
    """The previous release's source tree (git archive of its commit)."""
    data = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE],
        check=True,
        capture_output=True,
    ).stdout
    root = tmp_path / "previous"
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(root, filter="data")
    return root


#: Run on the previous release's tree (PREVIOUS_RELEASE), so in its module layout (flat, before
#: the layer folders): not to be renamed with the current package.
_OLD_RECORD = """
import sys
import competition_pipeline
from competition_pipeline.pipeline import record_windows
from competition_pipeline.sources.journal import JournalSource
from competition_pipeline.store import CompetitionStore
from competition_pipeline.windows import Window
print(competition_pipeline.__file__)
store = CompetitionStore(sys.argv[1]); store.ensure_schema()
windows = [Window.from_key(k) for k in sys.argv[3:]]
for report in record_windows(JournalSource(sys.argv[2]), store, windows):
    print(report.window, report.rows_inserted)
"""


def test_upgrade_from_the_previous_release_keeps_every_row(
    empty_database_url: str, journal: Path, tmp_path: Path
) -> None:
    old = _previous_release(tmp_path)
    write_segment(
        journal,
        OCT,
        "a.jsonl",
        [
            fill(1, OCT.start_ms),
            fill(2, OCT.start_ms + MS, taker_wallet_address=W2, maker_wallet_address=W1),
        ],
    )
    write_segment(journal, NOV, "b.jsonl", [fill(10, NOV.start_ms), fill(11, NOV.start_ms + 5)])
    script = tmp_path / "old_record.py"
    script.write_text(_OLD_RECORD)
    env = {**os.environ, "PYTHONPATH": str(old)}
    run = subprocess.run(
        [sys.executable, str(script), empty_database_url, str(journal), OCT.key, NOV.key],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert run.stdout.splitlines()[0].startswith(str(old)), run.stdout  # really the old code
    rows_before = query(
        empty_database_url, "SELECT * FROM competition_fill_events ORDER BY trade_id, wallet"
    )
    assert len(rows_before) == 8
    assert query(empty_database_url, "SELECT to_regclass('alembic_version')") == [(None,)]

    # The one command of the upgrade.
    env = {**os.environ, "COMPETITION_DATABASE_URL": empty_database_url}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [str(Path(sys.executable).with_name("competition-pipeline")), "schema"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert query(empty_database_url, "SELECT version_num FROM alembic_version") == [
        (schema.head(),)
    ]
    rows_after = query(
        empty_database_url, "SELECT * FROM competition_fill_events ORDER BY trade_id, wallet"
    )
    assert rows_after == rows_before
    # The old table became the history partition (not rewritten: same relfilenode name kept).
    assert partitions(empty_database_url)["competition_fill_events_hist"] == 8
    assert query(empty_database_url, "SELECT count(*) FROM competition_fill_keys") == [(8,)]
    # 0007 counted the recorded windows' totals (history partition included).
    upgraded = CompetitionStore(empty_database_url)
    assert [upgraded.totals_mismatches(w) for w in (OCT, NOV)] == [[], []]
    assert query(
        empty_database_url, "SELECT sum(trades + self_trades) FROM competition_fill_window_totals"
    ) == [(8,)]

    # Re-recording the same journal inserts nothing.
    with psycopg.connect(dburl.libpq(empty_database_url), autocommit=True) as conn:
        conn.execute("DELETE FROM competition_fill_windows")
    for window in (OCT, NOV):
        meta = metadata(materialize(empty_database_url, journal, window.key))
        assert (meta["rows_inserted"], meta["conflicts"]) == (0, 0), window.key
    # A conflicting version of an October fill, filed in a later month, is still detected.
    later = Window.from_key("2026-05-01-00:00")
    write_segment(journal, later, "c.jsonl", [fill(1, later.start_ms), fill(20, later.start_ms)])
    meta = metadata(materialize(empty_database_url, journal, later.key))
    assert (meta["rows_inserted"], meta["conflicts"]) == (2, 1)
    assert "competition_fill_events_2026_05" in partitions(empty_database_url)
    assert query(empty_database_url, "SELECT count(*) FROM competition_fill_events") == [(10,)]


def test_maintenance_jobs_run_through_dagster(database_url: str, journal: Path) -> None:
    from competition_pipeline.defs.months import build_retention, competition_months_job
    from competition_pipeline.defs.resources import CompetitionDatabase
    from tests.helpers.location import SETTINGS

    competition_fill_retention_job, _ = build_retention(SETTINGS)

    database = CompetitionDatabase(url=database_url)
    assert competition_months_job.execute_in_process(resources={"database": database}).success
    this_month = months.first_day(dt.datetime.now(dt.UTC).date())
    assert f"competition_fill_events_{months.first_day(this_month, 2):%Y_%m}" in partitions(
        database_url
    )
    write_segment(journal, OCT, "a.jsonl", [fill(1, OCT.start_ms)])
    materialize(database_url, journal, OCT.key)
    config = {"ops": {"retire_old_months": {"config": {"older_than_months": 3}}}}
    result = competition_fill_retention_job.execute_in_process(
        run_config=config, resources={"owner_database": database}
    )
    assert result.success
    assert "competition_fill_events_2026_03" not in partitions(database_url)
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(0,)]


def test_two_loads_creating_the_same_missing_month_both_succeed(database_url: str) -> None:
    import threading

    CompetitionStore(database_url).ensure_schema()
    results: list[bool] = []
    with psycopg.connect(dburl.libpq(database_url)) as first:
        assert first.execute("SELECT competition_create_month('2026-02-01')").fetchone() == (True,)

        def second() -> None:
            with psycopg.connect(dburl.libpq(database_url)) as conn:
                results.append(
                    conn.execute("SELECT competition_create_month('2026-02-01')").fetchone()[0]
                )

        thread = threading.Thread(target=second)
        thread.start()
        # The second waits for the first, uncommitted creation (on the month lock).
        with psycopg.connect(dburl.libpq(database_url), autocommit=True) as watch:
            for _ in range(600):
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                    " WHERE l.locktype = 'advisory' AND NOT l.granted"
                    " AND d.datname = current_database()"
                ).fetchone()[0]
                if waiting:
                    break
                threading.Event().wait(0.05)
        assert waiting == 1 and thread.is_alive()
        first.commit()
        thread.join(timeout=60)
    assert results == [False]
    assert "competition_fill_events_2026_02" in partitions(database_url)


@pytest.mark.parametrize("stage_tables", [100, 1], ids=["batch-tables", "past-the-cap"])
def test_a_repeat_in_the_third_batch_sends_the_rest_of_the_window_down_the_careful_path(
    database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch, stage_tables: int
) -> None:
    """One batch per segment: two batches go in on the fast path, the third holds a conflicting
    version of a fill recorded in another month and a repeat of the first batch's fill; the
    window ends on the careful path with each key once and the journal's digest."""
    from competition_pipeline.fills.journal import window_dir
    from competition_pipeline.recording import fill_events as pipeline
    from competition_pipeline.store import load

    monkeypatch.setattr(pipeline, "STAGE_ROWS", 1)  # every segment's batch staged on its own
    monkeypatch.setattr(load, "_STAGE_TABLES", stage_tables)  # 1: batches 3+ via stage_batch
    write_segment(journal, OCT, "a.jsonl", [fill(1, OCT.start_ms)])
    assert metadata(materialize(database_url, journal, OCT.key))["rows_inserted"] == 2
    t = NOV.start_ms
    write_segment(journal, NOV, "a.jsonl", [fill(10, t), fill(11, t + 1)])
    write_segment(journal, NOV, "b.jsonl", [fill(12, t + 2)])
    # Trade 1 again, its fill time in November: a second version, refused by the registry.
    write_segment(journal, NOV, "c.jsonl", [fill(13, t + 3), fill(1, t + 4), fill(10, t)])
    write_segment(journal, NOV, "d.jsonl", [fill(14, t + 5)])
    fast: list[bool] = []  # after each batch: still on the fast path?
    stage_rows = load.WindowLoad.stage_rows

    def spy(window_load: load.WindowLoad, rows: list) -> None:
        stage_rows(window_load, rows)
        fast.append(window_load._fast_path)

    monkeypatch.setattr(load.WindowLoad, "stage_rows", spy)
    result = materialize(database_url, journal, NOV.key, checks=True)
    assert fast[:4] == [True, True, False, False]
    meta = metadata(result)
    assert (meta["rows_inserted"], meta["rows_already_present"], meta["conflicts"]) == (10, 2, 1)
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations["reconciles_with_journal"]
    assert query(
        database_url,
        "SELECT trade_id, count(*) FROM competition_fill_events GROUP BY trade_id ORDER BY 1",
    ) == [(1, 2), (10, 2), (11, 2), (12, 2), (13, 2), (14, 2)]
    assert query(
        database_url, "SELECT DISTINCT fill_ts FROM competition_fill_events WHERE trade_id = 1"
    ) == [(OCT.start,)]
    assert query(database_url, "SELECT count(*) FROM competition_fill_keys") == [(12,)]
    assert query(
        database_url, "SELECT DISTINCT trade_id, source_file FROM competition_fill_conflicts"
    ) == [(1, f"{window_dir(journal, NOV).relative_to(journal)}/c.jsonl")]
    # The load's digest is the stored window's: the reconciliation may compare the two.
    (summary,) = query(
        database_url,
        "SELECT summary FROM competition_fill_windows WHERE window_start = %s",
        NOV.start,
    )
    stored = CompetitionStore(database_url).window_digest(NOV)
    assert summary[0]["rows_digest"] == stored.as_dict()
    # No staging table outlives the window's transaction; a second recording changes nothing.
    with psycopg.connect(dburl.libpq(database_url), autocommit=True) as conn:
        conn.execute("DELETE FROM competition_fill_windows WHERE window_start = %s", (NOV.start,))
    meta = metadata(materialize(database_url, journal, NOV.key))
    assert (meta["rows_inserted"], meta["rows_already_present"], meta["conflicts"]) == (0, 12, 1)


def test_the_upgrade_to_0004_keeps_each_jsonb_revision_whole_as_typed_columns(
    empty_database_url: str,
) -> None:
    """Revisions kept by 0003 (the old row as jsonb) read back, after 0004, as the row they were:
    what an undo restores from."""
    from alembic import command

    from competition_pipeline.store.tables import OLD_ROW_COLUMNS, fill_events

    url = empty_database_url
    store = CompetitionStore(url)
    engine = store.engine()
    with engine.begin() as conn:
        command.upgrade(schema._config(conn), "0003")
    engine.dispose()
    row = (  # in this hour: this month's partition is there from 0002 on
        "INSERT INTO competition_fill_events (trade_id, wallet, role, side, counterparty,"
        " is_self_trade, symbol, price, size, notional, fee, realized_pnl, source_type,"
        " taker_order_id, maker_order_id, fill_ts, window_start) VALUES (%s, %s, 'taker', 'Buy',"
        " '0xb', false, 'BTC-PERP', 101.5, 0.25, 25.375, %s, %s, 'OrderFilled', 1, 2,"
        " date_trunc('hour', now()) + interval '15 min 0.123 s', date_trunc('hour', now()))"
    )
    execute(url, row, 1, "0xa", "-0.0000003", None)
    execute(url, row, 2, "0xc", "0.38", "12.5")
    execute(
        url,
        "INSERT INTO competition_fill_revisions (rebuild_id, window_start, change, trade_id,"
        " wallet, old_row, changed_fields, version_from, version_to, reason)"
        " SELECT 'rebuild-1', e.window_start, 'changed', e.trade_id, e.wallet, to_jsonb(e), 'fee',"
        " 2, 3, 'fee rule' FROM competition_fill_events e UNION ALL SELECT 'rebuild-1',"
        " date_trunc('hour', now()), 'added', 3, '0xd', NULL, '', 2, 3, 'fee rule'",
    )

    applied = [r.split(" ")[0] for r in store.ensure_schema()]
    assert applied[0] == "0004"  # and those after it

    whole = ", ".join(OLD_ROW_COLUMNS.get(c, c) for c in fill_events.columns.keys())
    kept = f"SELECT {whole} FROM competition_fill_revisions WHERE change = %s ORDER BY trade_id"  # noqa: S608
    assert query(url, kept, "changed") == query(
        url, "SELECT * FROM competition_fill_events ORDER BY trade_id"
    )
    nulls = ", ".join(f"{c} IS NULL" for c in OLD_ROW_COLUMNS.values())
    added = f"SELECT {nulls} FROM competition_fill_revisions WHERE change = 'added'"  # noqa: S608
    assert query(url, added) == [(True,) * len(OLD_ROW_COLUMNS)]
    columns = {
        r[0]
        for r in query(
            url,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'competition_fill_revisions'",
        )
    }
    assert "old_row" not in columns and set(OLD_ROW_COLUMNS.values()) <= columns


def test_the_upgrade_to_0007_counts_the_totals_of_every_recorded_window_in_place(
    database_url: str, journal: Path
) -> None:
    """Windows recorded, the schema taken back to 0005 (no totals, the (wallet, fill_ts) index
    back), then upgraded in place: every window's totals are its rows', the standings from them
    are the rows', the index is gone, and the roles that wrote or read the fills may write or
    read the totals."""
    from alembic import command

    from competition_pipeline.store.tables import FILL_TOTALS
    from tests.helpers.standings import HOURS, WALLETS, reference, write_varied_journal

    url = database_url
    write_varied_journal(journal)
    for window in HOURS:
        assert materialize(url, journal, window.key).success
    store = CompetitionStore(url)
    engine = store.engine()
    with engine.begin() as conn:
        command.downgrade(schema._config(conn), "0005")
    engine.dispose()
    assert query(url, f"SELECT to_regclass('{FILL_TOTALS}')") == [(None,)]
    writer, reader = f"w0007_{os.getpid()}", f"r0007_{os.getpid()}"
    with psycopg.connect(dburl.libpq(url), autocommit=True) as conn:
        for role in (writer, reader):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role}")
        conn.execute(f"GRANT SELECT, INSERT ON competition_fill_events TO {writer}")
        conn.execute(f"GRANT SELECT ON competition_fill_events TO {reader}")
    try:
        applied = store.ensure_schema()
        applied_ids = [r.split(" ")[0] for r in applied]  # 0007 and every revision after 0005
        assert "0007_window_totals" in applied_ids and applied_ids == sorted(applied_ids)
        assert all(r > "0005" for r in applied_ids)
        for window in HOURS:
            assert store.totals_mismatches(window) == [], window.key
        assert query(url, "SELECT count(*) FROM competition_fill_window_totals") == query(
            url, "SELECT count(DISTINCT (window_start, wallet)) FROM competition_fill_events"
        )
        # No (wallet, fill_ts) index left, on the parent or on any month.
        assert (
            query(
                url,
                "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'competition_fill_events%%'"
                " AND indexdef LIKE '%%(wallet, fill_ts)%%'",
            )
            == []
        )
        granted = query(
            url,
            "SELECT r, p, has_table_privilege(r, %s, p) FROM unnest(%s::text[]) r,"
            " unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p ORDER BY 1, 2",
            FILL_TOTALS,
            [writer, reader],
        )
        assert {(r, p) for r, p, ok in granted if ok} == {
            (reader, "SELECT"),
            (writer, "SELECT"),
            (writer, "INSERT"),
            (writer, "UPDATE"),
        }
        competitions = Competitions(store)
        first, last = HOURS[0], HOURS[-1]
        competitions.create("c", "c", first.start + dt.timedelta(minutes=7), last.end, "pnl")
        for wallet in WALLETS.values():
            competitions.register("c", wallet)
        ours = [
            (s.rank, s.wallet, s.pnl, s.volume, s.trades, s.fees, s.medal)
            for s in competitions.refresh("c")
        ]
        assert [tuple(map(str, r)) for r in ours] == [
            tuple(map(str, r)) for r in reference(url, "c")
        ]
        # Loads after the upgrade add to the counted totals.
        write_segment(journal, HOURS[1], "late.jsonl", [fill(55_555, HOURS[1].start_ms + 9)])
        assert metadata(materialize(url, journal, HOURS[1].key))["rows_inserted"] == 2
        assert store.totals_mismatches(HOURS[1]) == []
    finally:
        with psycopg.connect(dburl.libpq(url), autocommit=True) as conn:
            for role in (writer, reader):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")
