"""docs/operations.md's example files stay true: the production ``dagster.yaml`` loads as a Dagster
instance on PostgreSQL, ``roles.sql`` and ``grants.sql`` apply and give each role exactly what the
guide's table says, and ``partitioning.sql`` turns recorded tables into the partitioned layout.

The SQL files are run as written except for their names: roles and databases are cluster-wide, so
each test renames them to unique ones (``opsdoc_<hex>_owner``, ...) and drops them afterwards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from competition_pipeline.store import dburl
from competition_pipeline.tools import embedded
from tests.helpers.environment import REPO

EXAMPLES = REPO / "docs" / "examples"
ROLES = ("owner", "recorder", "admin", "analyst")
FILL_TABLES = (
    "competition_fill_events",
    "competition_fill_keys",
    "competition_fill_rejects",
    "competition_fill_conflicts",
)


def test_production_dagster_yaml_loads_as_an_instance(
    tmp_path: Path, instance_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from dagster_postgres import PostgresRunStorage

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(EXAMPLES / "dagster.production.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)

    # from_config validates every key against Dagster's schema and builds every component.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert type(instance.run_launcher).__name__ == "GrpcRunLauncher"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [{"key": "dagster/backfill", "limit": 2}]
        assert queue.max_user_code_failure_retries == 3
        pools = instance.get_concurrency_config().pool_config
        assert (pools.default_pool_limit, pools.pool_granularity.value) == (2, "op")
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert (instance.run_retries_enabled, instance.run_retries_max_retries) == (True, 2)
        assert not instance.run_retries_retry_on_asset_or_op_failure
        # The project's storage classes, which created Dagster's tables in the fresh database.
        ref = instance.get_ref()
        assert ref.run_storage_data.module_name == "competition_pipeline.instance_storage"
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert instance.get_runs() == []
    with psycopg.connect(dburl.libpq(instance_url)) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_celery_dagster_yamls_load_as_instances(
    tmp_path: Path, instance_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service host's file constructs the Celery run launcher (no broker is contacted until a
    run is launched) with the broker from the environment, and the worker's loads on the same
    storage; the broker's password is in neither instance's printed configuration."""
    import dagster as dg
    from dagster_celery.launcher import CeleryRunLauncher

    from competition_pipeline.defs.celery_launcher import CeleryRunLauncher as Launcher

    secret = "s3cret-broker-password"
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)
    monkeypatch.setenv("CELERY_BROKER_URL", f"amqp://competition:{secret}@10.0.0.1:5672//")
    for name, check in (("dagster.celery.yaml", True), ("dagster.celery-worker.yaml", False)):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(EXAMPLES / name, home / "dagster.yaml")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.run_monitoring_enabled
            if check:
                launcher = instance.run_launcher
                assert isinstance(launcher, Launcher) and isinstance(launcher, CeleryRunLauncher)
                assert launcher.broker == f"amqp://competition:{secret}@10.0.0.1:5672//"
                assert launcher.backend == "rpc://"
                # Lost runs are found by the sensor's liveness rule, not by task states.
                assert not launcher.supports_check_run_worker_health
                assert instance.run_monitoring_max_resume_run_attempts == 0
            assert secret not in (home / "dagster.yaml").read_text()
            assert secret not in str(instance.get_settings("run_launcher"))
            assert instance.get_runs() == []


# -- SQL files ------------------------------------------------------------------------------------


def statements(text: str) -> list[str]:
    """SQL statements and psql meta-command lines (``\\connect``, ``\\set``), in order.

    Enough of psql's lexer for these files: ``--`` comments, single-quoted strings, dollar quotes.
    """
    out: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and not "".join(current).strip() and c == "\\":
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(text[i:end].strip())
            current, i = [], end
            continue
        at_line_start = c == "\n"
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "'":
            end = text.index("'", i + 1)
            current.append(text[i : end + 1])
            i = end + 1
            continue
        tag = re.match(r"\$[A-Za-z_]*\$", text[i:])
        if tag:
            end = text.index(tag.group(), i + len(tag.group()))
            current.append(text[i : end + len(tag.group())])
            i = end + len(tag.group())
            continue
        if c == ";":
            statement = "".join(current).strip()
            if statement:
                out.append(statement)
            current, i = [], i + 1
            continue
        current.append(c)
        i += 1
    assert not "".join(current).strip(), f"unterminated statement: {''.join(current)[:80]}"
    return out


@dataclass
class Cluster:
    """roles.sql applied under unique names; URLs to connect as each role."""

    admin_url: str
    prefix: str
    competition_db: str
    dagster_db: str

    def role(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def url(self, database: str, role: str | None = None) -> str:
        url = dburl.parse(embedded.database_url(self.admin_url, database))
        if role is not None:
            url = url.set(username=role, password=None)
        return url.render_as_string(hide_password=False)

    def rename(self, text: str) -> str:
        """The example's names replaced by this cluster's (counts checked by the callers)."""
        text = re.sub(r"\bcompetition_(owner|recorder|admin|analyst)\b", rf"{self.prefix}_\1", text)
        text = re.sub(r"\bdagster_storage\b", f"{self.prefix}_dagster_storage", text)
        text = re.sub(r"(DATABASE|\\connect) competition\b", rf"\1 {self.competition_db}", text)
        return re.sub(r"DATABASE dagster\b", f"DATABASE {self.dagster_db}", text)

    def run(self, path: Path, database: str) -> list[str]:
        """Run a SQL file as the superuser, statement by statement (autocommit, like psql),
        following ``\\connect``; returns the server's notices and warnings."""
        notices: list[str] = []
        conn = None
        try:
            for statement in statements(self.rename(path.read_text())):
                if statement.startswith("\\connect "):
                    database = statement.split()[1]
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                if statement.startswith("\\"):
                    assert statement.startswith("\\set "), statement
                    continue
                if conn is None:
                    conn = psycopg.connect(dburl.libpq(self.url(database)), autocommit=True)
                    conn.add_notice_handler(
                        lambda d: notices.append(f"{d.severity}: {d.message_primary}")
                    )
                conn.execute(statement)  # type: ignore[arg-type]
        finally:
            if conn is not None:
                conn.close()
        return notices


@pytest.fixture
def cluster(pg_admin_url: str) -> Iterator[Cluster]:
    """roles.sql, renamed, on the test server; every role and database dropped afterwards."""
    prefix = f"opsdoc_{uuid.uuid4().hex[:10]}"
    c = Cluster(pg_admin_url, prefix, f"{prefix}_competition", f"{prefix}_dagster")
    roles_sql = (EXAMPLES / "roles.sql").read_text()
    assert len(re.findall(r"\bcompetition_(?:owner|recorder|admin|analyst)\b", roles_sql)) >= 8
    admin_db = dburl.parse(pg_admin_url).database or "postgres"
    try:
        assert c.run(EXAMPLES / "roles.sql", admin_db) == []
        yield c
    finally:
        for database in (c.competition_db, c.dagster_db):
            embedded.drop_database(pg_admin_url, database)
        with psycopg.connect(dburl.libpq(pg_admin_url), autocommit=True) as conn:
            for name in (*ROLES, "dagster_storage"):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(c.role(name))))


# What section 4 of docs/operations.md promises, table by table (absent: no privilege).
#: What rebuilds and retention write (the owner only); the recorder and the analyst read them.
HISTORY_TABLES = (
    "competition_fill_rebuilds",
    "competition_fill_revisions",
    "competition_fill_retired",
    "competition_fill_counter_offsets",
)
EXPECTED = {
    "recorder": {
        **{t: {"SELECT", "INSERT"} for t in FILL_TABLES},
        **{t: {"SELECT"} for t in HISTORY_TABLES},
        "competition_fill_windows": {"SELECT", "INSERT", "UPDATE"},
        "competition_fill_window_totals": {"SELECT", "INSERT", "UPDATE"},
        "competition_fill_followers": {"SELECT", "INSERT", "UPDATE"},
        "competitions": {"SELECT"},
        "competition_participants": {"SELECT"},
        "competition_standings": {"SELECT", "INSERT", "DELETE"},
    },
    "admin": {
        "competitions": {"SELECT", "INSERT"},
        "competition_participants": {"SELECT", "INSERT", "UPDATE"},
        "competition_standings": {"SELECT"},
    },
    "analyst": {
        t: {"SELECT"}
        for t in (
            *FILL_TABLES,
            *HISTORY_TABLES,
            "competition_fill_windows",
            "competition_fill_window_totals",
            "competition_fill_followers",
            "competitions",
            "competition_participants",
            "competition_standings",
        )
    },
}
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")


def test_grants_apply_to_a_fresh_schema_and_give_each_role_what_the_guide_says(
    cluster: Cluster,
) -> None:
    from competition_pipeline.store.database import CompetitionStore, metadata

    c = cluster
    owner_url = c.url(c.competition_db, c.role("owner"))
    CompetitionStore(owner_url).ensure_schema()  # `competition-pipeline schema` as the owner
    notices = c.run(EXAMPLES / "grants.sql", c.competition_db)
    # A GRANT by a role that does not own the table only warns ("no privileges were granted").
    assert notices == []

    tables = sorted(metadata.tables)
    assert set(EXPECTED["analyst"]) == set(tables), "a table is missing from grants or the guide"
    with psycopg.connect(dburl.libpq(c.url(c.competition_db))) as conn:

        def has(role: str, table: str, privilege: str) -> bool:
            query = "SELECT has_table_privilege(%s, %s, %s)"
            return conn.execute(query, (c.role(role), table, privilege)).fetchone()[0]

        for role, granted in EXPECTED.items():
            for table in tables:
                actual = {p for p in PRIVILEGES if has(role, table, p)}
                assert actual == granted.get(table, set()), (role, table)
        owner = conn.execute(
            "SELECT d.datname, pg_get_userbyid(d.datdba) FROM pg_database d"
            " WHERE d.datname = ANY(%s) ORDER BY 1",
            ([c.competition_db, c.dagster_db],),
        ).fetchall()
        assert owner == [
            (c.competition_db, c.role("owner")),
            (c.dagster_db, c.role("dagster_storage")),
        ]
        for role, temporary in {"recorder": True, "admin": False, "analyst": False}.items():
            row = conn.execute(
                "SELECT has_database_privilege(%s, %s, 'TEMPORARY'),"
                " has_database_privilege(%s, %s, 'CONNECT'),"
                " has_schema_privilege(%s, 'public', 'CREATE')",
                (c.role(role), c.competition_db) * 2 + (c.role(role),),
            ).fetchone()
            assert row == (temporary, True, False), role

    # The analyst's default privileges cover a table the owner creates later.
    with psycopg.connect(dburl.libpq(owner_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE competition_later (id int)")
    with psycopg.connect(dburl.libpq(c.url(c.competition_db, c.role("analyst")))) as conn:
        assert conn.execute("SELECT count(*) FROM competition_later").fetchone() == (0,)
    # And the recorder really is refused what it was not granted.
    with psycopg.connect(dburl.libpq(c.url(c.competition_db, c.role("recorder")))) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM competition_fill_events")


def test_partitioning_sql_prepares_a_large_table_and_the_migration_reuses_it(
    cluster: Cluster,
) -> None:
    """The previous release's table (schema at the baseline revision), prepared online with
    partitioning.sql, then upgraded by `competition-pipeline schema`: nothing rebuilt or lost."""
    from alembic import command

    from competition_pipeline.store import schema
    from competition_pipeline.store.database import CompetitionStore

    c = cluster
    owner_url = c.url(c.competition_db, c.role("owner"))
    store = CompetitionStore(owner_url)
    engine = store.engine()
    with engine.begin() as sa_conn:  # the tables as the previous release made them
        command.upgrade(schema._config(sa_conn), "0001")
    engine.dispose()
    row = (
        "INSERT INTO competition_fill_events (trade_id, wallet, role, side, counterparty,"
        " is_self_trade, symbol, price, size, notional, fee, source_type, taker_order_id,"
        " maker_order_id, fill_ts, window_start) VALUES (%s, '0xa', 'taker', 'Buy', '0xb', false,"
        " 'BTC-C', 1, 1, 1, 0, 'OrderFilled', 1, 2, %s, date_trunc('hour', %s::timestamptz))"
    )
    recorder = c.role("recorder")
    with psycopg.connect(dburl.libpq(owner_url), autocommit=True) as conn:
        conn.execute(f"GRANT SELECT, INSERT ON competition_fill_events TO {recorder}")
        for trade_id, ts in ((1, "2026-11-20 10:15+00"), (2, "2026-12-31 23:59+00")):
            conn.execute(row, (trade_id, ts, ts))

    # As competition_owner, as the script says (statements run one by one, like psql -f).
    script = (EXAMPLES / "partitioning.sql").read_text()
    assert "CONCURRENTLY" in script and "hist_bound" in script
    with psycopg.connect(dburl.libpq(owner_url), autocommit=True) as conn:
        for statement in statements(c.rename(script)):
            if not statement.startswith("\\"):
                conn.execute(statement)  # type: ignore[arg-type]
        assert conn.execute("SELECT count(*) FROM competition_fill_keys").fetchone() == (2,)
        # Recorded after the preparation: the migration registers this window's keys itself.
        conn.execute(row, (3, "2026-12-31 22:00+00", "2026-12-31 22:00+00"))
        conn.execute(
            "INSERT INTO competition_fill_windows (window_start, source, extent, summary)"
            " VALUES ('2026-12-31 22:00+00', 'journal', '{}', '{}')"
        )

    assert [r.split(" ")[0] for r in store.ensure_schema()] == [
        "0002",
        "0003",
        "0004",
        "0005",
        "0006_live_hour_leases",
        "0007_window_totals",
        "0008_least_privilege",
    ]  # the upgrade
    with psycopg.connect(dburl.libpq(owner_url), autocommit=True) as conn:
        parts = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'competition_fill_events'::regclass ORDER BY 1"
        ).fetchall()
        assert [p for (p,) in parts][-1] == "competition_fill_events_hist"
        assert conn.execute("SELECT count(*) FROM competition_fill_events_hist").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM competition_fill_keys").fetchone() == (3,)
        # The prepared indexes were adopted as the parent's, not built again.
        adopted = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname IN"
            " ('competition_fill_events_pkey', 'ix_competition_fill_events_wallet_fill_ts')"
            " ORDER BY 1"
        ).fetchall()
        assert ("competition_fill_events_hist_pkey",) in adopted
        # 0002 adopted the prepared (wallet, fill_ts) index too; 0007 dropped it with the
        # parent's (nothing reads by wallet since the standings sum per-window totals).
        assert conn.execute(
            "SELECT to_regclass('competition_fill_events_hist_wallet_fill_ts')"
        ).fetchone() == (None,)
        assert conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'competition_fill_events'::regclass"
            " AND contype = 'p'"
        ).fetchone() == ("competition_fill_events_pkey",)
        # The cutover is the prepared one: January 2027 gets its own partition, December not.
        assert conn.execute(
            "SELECT competition_create_month('2026-12-01'), competition_create_month('2027-01-01')"
        ).fetchone() in ((False, True), (False, False))
        assert conn.execute("SELECT to_regclass('competition_fill_events_2027_01')").fetchone() == (
            "competition_fill_events_2027_01",
        )
        # No DEFAULT partition: a month without its partition is refused, loudly.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(row, (4, "2031-06-01 00:00+00", "2031-06-01 00:00+00"))
    # The old table's grants were copied to the new parent and the key registry.
    with psycopg.connect(dburl.libpq(c.url(c.competition_db, recorder))) as conn:
        assert conn.execute("SELECT count(*) FROM competition_fill_keys").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM competition_fill_events").fetchone() == (3,)
    assert store.ensure_schema() == []  # at head: a no-op


def _psql(c: Cluster, role: str, statement: str) -> subprocess.CompletedProcess:
    """``statement`` through psql, connected as ``role`` (the way an operator would try it)."""
    url = dburl.parse(c.url(c.competition_db, c.role(role)))
    conninfo = f"host={url.host} port={url.port or 5432} dbname={url.database} user={url.username}"
    return subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", conninfo, "-c", statement],
        capture_output=True,
        text=True,
        timeout=60,
    )


#: What each role must not do (issue 33), each tried through psql as that role.
FORBIDDEN = {
    "recorder": (
        "UPDATE competitions SET start_ts = now(), end_ts = now() + interval '1 day',"
        " primary_win_condition = 'volume', name = 'rigged'",
        "DELETE FROM competitions",
        "DELETE FROM competition_fill_events",
        "UPDATE competition_fill_events SET price = 1",
        "DELETE FROM competition_participants",
        "INSERT INTO competition_fill_retired (window_start) VALUES (now())",
        "CREATE TABLE competition_x (id int)",
    ),
    "admin": (
        "UPDATE competitions SET name = 'rigged'",
        "DELETE FROM competition_fill_events",
        "INSERT INTO competition_standings (competition_id) VALUES ('x')",
        "SELECT competition_create_month('2200-01-01')",
    ),
    "analyst": (
        "SELECT competition_create_month('2200-01-01')",
        "INSERT INTO competitions (id) VALUES ('x')",
        "UPDATE competition_participants SET username = 'x'",
        "DELETE FROM competition_fill_windows",
    ),
}


def test_each_role_is_refused_what_it_must_not_do_through_psql(cluster: Cluster) -> None:
    """Issue 33: as the recorder ``UPDATE competitions ... name='rigged'`` returned UPDATE 1, and
    the read-only analyst created twelve partitions for the year 2200 through the SECURITY
    DEFINER function. With grants.sql applied every such statement is refused, and what each
    role needs still works (the recorder creates a month and refreshes standings)."""
    import datetime as dt

    from competition_pipeline.store.database import CompetitionStore
    from competition_pipeline.store.standings import Competitions

    c = cluster
    CompetitionStore(c.url(c.competition_db, c.role("owner"))).ensure_schema()
    assert c.run(EXAMPLES / "grants.sql", c.competition_db) == []
    admin = Competitions(CompetitionStore(c.url(c.competition_db, c.role("admin"))))
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    admin.create("cup", "Cup", start, start + dt.timedelta(days=30), "pnl")
    for role, statements_ in FORBIDDEN.items():
        for statement in statements_:
            done = _psql(c, role, statement)
            assert done.returncode != 0, (role, statement, done.stdout)
            assert "permission denied" in done.stderr, (role, statement, done.stderr)
    assert _psql(c, "recorder", "SELECT name FROM competitions").stdout.strip() == "Cup"
    assert (
        _psql(
            c,
            "analyst",
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'competition_fill_events_2200%'",
        ).stdout.strip()
        == "0"
    )
    # What the recorder needs: a month partition, and a standings refresh (an advisory lock).
    made = _psql(c, "recorder", "SELECT competition_create_month('2027-02-01')")
    assert made.returncode == 0 and made.stdout.strip() in ("t", "f"), made.stderr
    recorder = Competitions(CompetitionStore(c.url(c.competition_db, c.role("recorder"))))
    assert recorder.refresh("cup") == []


def test_security_md_lists_exactly_the_grants_of_grants_sql() -> None:
    """docs/security.md's grant list is grants.sql's, statement for statement (it was out of
    date: a role given exactly it failed on its first window)."""
    doc = (REPO / "docs" / "security.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, re.S)
    kinds = ("GRANT", "REVOKE", "ALTER")
    documented = [s for b in blocks for s in statements(b) if s.split()[0] in kinds]
    granted = [
        s for s in statements((EXAMPLES / "grants.sql").read_text()) if s.split()[0] in kinds
    ]

    def norm(text: str) -> str:
        return " ".join(text.split())

    assert granted and [norm(s) for s in documented] == [norm(s) for s in granted]
