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
from competition_pipeline.tools import cli, local, local_state
from tests.helpers.journal import W1, W2
from tests.helpers.local_state import write_state

WINDOW = Window.from_key("2026-11-20-03:00")

#: Each test's variables are restored after it (the local start's steps set them).
pytestmark = pytest.mark.usefixtures("restored_environment")


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.name.endswith(".gz") else data).splitlines()


def test_commands_use_the_running_local_start(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    write_state(state, monkeypatch, database_url)
    assert local_state.database_url() == database_url
    assert cli.main(["competition", "list"]) == 0
    assert "no competitions" in capsys.readouterr().out
    args = ["competition", "create", "c1", "--start", "2026-11-20T00:00Z"]
    assert cli.main([*args, "--end", "2026-11-27T00:00Z"]) == 0
    # The environment wins over the state file.
    monkeypatch.setenv("COMPETITION_DATABASE_URL", "postgresql://elsewhere@127.0.0.1:1/none")
    assert local_state.database_url() == "postgresql://elsewhere@127.0.0.1:1/none"


def test_a_state_file_of_a_stopped_start_is_ignored(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_state(state, monkeypatch, database_url)
    data = json.loads(path.read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({**data, "pid": dead.pid}))
    assert local_state.read_local_state() is None
    with pytest.raises(SystemExit, match="bin/start"):
        local_state.database_url()


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


def test_standings_say_when_they_were_computed_and_up_to_which_fill(
    state: Path, database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from competition_pipeline.fills.journal import JournalSource
    from competition_pipeline.recording.fill_events import record_window
    from competition_pipeline.store.database import CompetitionStore
    from tests.helpers.journal import T0, fill, write_segment

    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    args = ["competition", "create", "c1", "--start", "2026-11-20T00:00Z"]
    assert cli.main([*args, "--end", "2026-11-27T00:00Z"]) == 0
    assert cli.main(["competition", "register", "c1", W1, W2]) == 0
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(7, T0 + 1500), fill(5, T0 + 1500)])
    record_window(JournalSource(journal), CompetitionStore(database_url), WINDOW)
    capsys.readouterr()
    assert cli.main(["standings", "c1", "--refresh"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("computed 2026-") and "UTC" in first
    assert first.endswith("up to the fill of 2026-11-20 03:00:01.500 UTC (trade 7)")
    assert cli.main(["standings", "c1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["through_fill_ts"], r["through_trade_id"]) for r in rows} == {
        ("2026-11-20T03:00:01.500000+00:00", 7)
    }
    assert all(r["computed_at"].startswith("20") for r in rows)


def test_the_demo_competition_registers_wallets_that_trade_in_the_sample(
    state: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from competition_pipeline.store.database import CompetitionStore
    from competition_pipeline.store.standings import Competitions
    from competition_pipeline.tools import simulate

    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    journal = state / "journal"
    simulate.write_hour(journal, WINDOW, 300)
    local._prepare_demo_competition(journal)
    local._prepare_demo_competition(journal)  # a restart keeps it
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
