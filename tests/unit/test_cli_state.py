"""The CLI before any database: where it looks for one and what it says when there is none,
its help, the state file's contents, and where the local start's partitions begin. The
commands run on a database are tested in tests/e2e/test_cli.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from competition_pipeline.tools import cli, local, local_state
from tests.helpers.environment import REPO
from tests.helpers.local_state import write_state

#: Each test's variables are restored after it (the local start's steps set them).
pytestmark = pytest.mark.usefixtures("restored_environment")


def test_without_a_url_or_a_running_start_the_error_names_both(state: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["standings", "x"])
    message = str(exc.value)
    assert "COMPETITION_DATABASE_URL" in message and "bin/start" in message
    assert str(state / "local.json") in message


def test_a_password_is_never_written_to_the_state_file(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_state(state, monkeypatch, "postgresql://app:s3cret@db.internal/competition")
    text = path.read_text()
    assert "s3cret" not in text
    assert json.loads(text)["competition_database_url"] is None
    with pytest.raises(SystemExit) as exc:
        local_state.database_url()
    assert "COMPETITION_DATABASE_URL" in str(exc.value) and "s3cret" not in str(exc.value)


def test_psql_prints_the_command_without_the_password(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("COMPETITION_DATABASE_URL", "postgresql://app:s3cret@db.internal/comp")
    assert cli.main(["psql", "--print"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert out.strip() == "PGPASSWORD=... psql 'postgresql://app@db.internal/comp'"


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
    journal = local._prepare_journal(state, hours=2, fills_per_hour=20)
    first = Window(Window.containing(dt.datetime.now(dt.UTC)).start - 2 * HOUR)
    assert [w.key for w in local.journal_hours(journal)][:1] == [first.key]
    assert os.environ["FILL_PARTITIONS_START"] == first.key
    # A deployment's own start is kept.
    monkeypatch.setenv("FILL_PARTITIONS_START", "2026-01-01-00:00")
    local._prepare_journal(state, hours=2, fills_per_hour=20)
    assert os.environ["FILL_PARTITIONS_START"] == "2026-01-01-00:00"
