"""The CLI a new user meets: where it finds the database, its help, and what it says when there
is nothing to show yet. Against a real PostgreSQL; the state file is the one ``up`` writes."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from competition_pipeline.fills.windows import Window
from competition_pipeline.store import dburl
from competition_pipeline.tools import cli
from tests.helpers.dagster_dev import LOCAL_START_VARIABLES
from tests.helpers.environment import REPO
from tests.helpers.journal import W1, W2

WINDOW = Window.from_key("2026-11-20-03:00")


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.name.endswith(".gz") else data).splitlines()


@pytest.fixture(autouse=True)
def restored_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local start's steps set variables in ``os.environ`` (as ``up`` means them to): each
    is recorded here first, so that monkeypatch removes it again after the test (a variable
    that was absent and only deleted with ``raising=False`` would not be restored)."""
    for name in LOCAL_START_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty COMPETITION_STATE_DIR and no database URL in the environment."""
    directory = tmp_path / "state"
    directory.mkdir()
    monkeypatch.setenv("COMPETITION_STATE_DIR", str(directory))
    monkeypatch.delenv("COMPETITION_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)
    return directory


def write_state(state: Path, monkeypatch: pytest.MonkeyPatch, url: str, **extra) -> Path:
    """The state file as a running ``up`` (this process) writes it."""
    monkeypatch.setenv("COMPETITION_DATABASE_URL", url)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    path = cli._write_local_state(state, ui="http://127.0.0.1:3000", **extra)
    monkeypatch.delenv("COMPETITION_DATABASE_URL")
    monkeypatch.delenv("DAGSTER_POSTGRES_URL")
    return path


def test_without_a_url_or_a_running_start_the_error_names_both(state: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["standings", "x"])
    message = str(exc.value)
    assert "COMPETITION_DATABASE_URL" in message and "bin/start" in message
    assert str(state / "local.json") in message


def test_commands_use_the_running_local_start(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    write_state(state, monkeypatch, database_url)
    assert cli.database_url() == database_url
    assert cli.main(["competition", "list"]) == 0
    assert "no competitions" in capsys.readouterr().out
    args = ["competition", "create", "c1", "--start", "2026-11-20T00:00Z"]
    assert cli.main([*args, "--end", "2026-11-27T00:00Z"]) == 0
    # The environment wins over the state file.
    monkeypatch.setenv("COMPETITION_DATABASE_URL", "postgresql://elsewhere@127.0.0.1:1/none")
    assert cli.database_url() == "postgresql://elsewhere@127.0.0.1:1/none"


def test_a_state_file_of_a_stopped_start_is_ignored(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_state(state, monkeypatch, database_url)
    data = json.loads(path.read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({**data, "pid": dead.pid}))
    assert cli.read_local_state() is None
    with pytest.raises(SystemExit, match="bin/start"):
        cli.database_url()


def test_a_password_is_never_written_to_the_state_file(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_state(state, monkeypatch, "postgresql://app:s3cret@db.internal/competition")
    text = path.read_text()
    assert "s3cret" not in text
    assert json.loads(text)["competition_database_url"] is None
    with pytest.raises(SystemExit) as exc:
        cli.database_url()
    assert "COMPETITION_DATABASE_URL" in str(exc.value) and "s3cret" not in str(exc.value)


def test_psql_prints_the_command_without_the_password(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("COMPETITION_DATABASE_URL", "postgresql://app:s3cret@db.internal/comp")
    assert cli.main(["psql", "--print"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert out.strip() == "PGPASSWORD=... psql 'postgresql://app@db.internal/comp'"


def test_psql_runs_on_the_database(state: Path, database_url: str) -> None:
    env = {**os.environ, "COMPETITION_DATABASE_URL": database_url}
    command = [str(Path(sys.executable).with_name("competition-pipeline")), "psql"]
    done = subprocess.run(
        [*command, "--", "-tAc", "SELECT current_database()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == database_url.rsplit("/", 1)[-1].split("?")[0]


def test_standings_not_computed_yet_says_so_and_how(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    args = ["competition", "create", "c1", "--start", "2026-11-20T00:00Z"]
    assert cli.main([*args, "--end", "2026-11-27T00:00Z"]) == 0
    capsys.readouterr()
    assert cli.main(["standings", "c1"]) == 1
    assert "no registered wallets" in capsys.readouterr().err
    assert cli.main(["competition", "register", "c1", W1, W2]) == 0
    capsys.readouterr()
    assert cli.main(["standings", "c1"]) == 1
    err = capsys.readouterr().err
    assert "not computed yet" in err and "--refresh" in err and "competition_standings" in err
    assert cli.main(["standings", "c1", "--refresh"]) == 0
    capsys.readouterr()
    assert cli.main(["competition", "list"]) == 0
    (header, row) = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["id", "start"]
    assert row.split() == ["c1", "2026-11-20", "00:00", "2026-11-27", "00:00", "pnl", "2", "2"]


def test_help_is_plain_text_and_every_argument_is_explained() -> None:
    def help_of(*args: str) -> str:
        command = [sys.executable, "-m", "competition_pipeline.tools.cli", *args, "--help"]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    top = help_of()
    assert "``" not in top and "psql" in top
    up = help_of("up")
    assert "webserver port (default 3000)" in up
    assert "fills in each closed sample hour" in " ".join(up.split())
    register = help_of("competition", "register")
    assert "the competition's id" in register and "0x + 40 hex digits" in register
    assert "list" in help_of("competition")


def test_the_local_start_begins_its_partitions_where_its_journal_begins(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from competition_pipeline.fills.windows import HOUR, Window

    monkeypatch.delenv("FILL_JOURNAL_DIR", raising=False)
    monkeypatch.delenv("FILL_PARTITIONS_START", raising=False)
    journal = cli._prepare_journal(state, hours=2, fills_per_hour=20)
    first = Window(Window.containing(dt.datetime.now(dt.UTC)).start - 2 * HOUR)
    assert [w.key for w in cli.journal_hours(journal)][:1] == [first.key]
    assert os.environ["FILL_PARTITIONS_START"] == first.key
    # A deployment's own start is kept.
    monkeypatch.setenv("FILL_PARTITIONS_START", "2026-01-01-00:00")
    cli._prepare_journal(state, hours=2, fills_per_hour=20)
    assert os.environ["FILL_PARTITIONS_START"] == "2026-01-01-00:00"


def test_the_demo_competition_registers_wallets_that_trade_in_the_sample(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from competition_pipeline.store.database import CompetitionStore
    from competition_pipeline.store.standings import Competitions
    from competition_pipeline.tools import simulate

    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    journal = state / "journal"
    simulate.write_hour(journal, WINDOW, 300)
    cli._prepare_demo_competition(journal)
    cli._prepare_demo_competition(journal)  # a restart keeps it
    (demo,) = Competitions(CompetitionStore(database_url)).summaries()
    assert (demo.id, demo.start_ts, demo.participants) == ("demo", WINDOW.start, 12)
    assert demo.end_ts - demo.start_ts == dt.timedelta(days=7)
    with psycopg.connect(dburl.libpq(database_url)) as conn:
        registered = {w for (w,) in conn.execute("SELECT wallet FROM competition_participants")}
    traded = {
        m["fill"][side].lower()
        for raw in journal.rglob("*.jsonl*")
        for m in map(json.loads, _lines(raw))
        if m.get("type") == "OrderFilled"
        for side in ("taker_wallet_address", "maker_wallet_address")
    }
    assert len(registered & traded) >= 10
