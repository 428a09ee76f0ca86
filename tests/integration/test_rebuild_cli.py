"""``competition-pipeline rebuild`` and ``status`` as a new user reads them: a dry run that changes
nothing says so, counts are in words ("1 window"), the status lists rebuilds under their own
heading, an undo prints a sentence (not a dict), and the open hour is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from competition_pipeline.fills.journal import JournalSource
from competition_pipeline.fills.windows import Window
from competition_pipeline.recording.fill_events import record_window
from competition_pipeline.store.database import CompetitionStore
from competition_pipeline.tools import cli
from tests.helpers.journal import W1, W2, fill, write_segment
from tests.helpers.rebuild import old_release, snapshot

WINDOW = Window.from_key("2026-03-31-14:00")


@pytest.fixture
def environment(database_url: str, journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPETITION_DATABASE_URL", database_url)
    monkeypatch.setenv("FILL_JOURNAL_DIR", str(journal))


def test_a_dry_run_that_changes_nothing_says_so_in_one_line(
    database_url: str, journal: Path, environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    write_segment(journal, WINDOW, "s.jsonl", [fill(1, WINDOW.start_ms + 1)])
    record_window(JournalSource(journal), CompetitionStore(database_url), WINDOW)
    assert cli.main(["rebuild", "--from", WINDOW.key, "--to", WINDOW.key]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("rebuild ") and "(dry run: nothing written), 1 window in " in out[0]
    assert out[-1] == "nothing would change: 1 window checked, each derives as stored"


def test_apply_status_and_undo_read_as_sentences(
    database_url: str,
    journal: Path,
    environment: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start = WINDOW.start_ms
    write_segment(
        journal,
        WINDOW,
        "s.jsonl",
        [fill(1, start + 1), fill(2, start + 2, taker_wallet_address=W2, maker_wallet_address=W1)],
    )
    with monkeypatch.context() as patch:
        old_release(patch)
        record_window(JournalSource(journal), CompetitionStore(database_url), WINDOW)
    span = ["--from", WINDOW.key, "--to", WINDOW.key]

    assert cli.main(["rebuild", *span]) == 0
    out = capsys.readouterr().out
    assert "1 window would change; to apply: competition-pipeline rebuild" in out
    assert cli.main(["rebuild", *span, "--apply", "--reason", "maker fee fix"]) == 0
    out = capsys.readouterr().out
    assert "1 window replaced; undo: competition-pipeline rebuild --undo " in out
    rebuild_id = out.split("--undo ")[1].split()[0]

    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heading = lines.index("latest rebuilds and undos: 1")
    assert lines[heading - 1] == "retired windows: 0"
    assert lines[heading + 1].startswith(f"  rebuild {rebuild_id} at ")
    assert lines[heading + 1].endswith(" UTC: 1 window, 'maker fee fix'")

    assert cli.main(["rebuild", "--undo", rebuild_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{WINDOW.key}: restored as it was before {rebuild_id} (2 rows changed back)",
        f"undo of {rebuild_id}: 1 window restored",
    ]


def test_the_open_hour_is_refused_before_anything_is_read(
    database_url: str, journal: Path, environment: None
) -> None:
    now = Window.containing(dt.datetime.now(dt.UTC))
    write_segment(journal, now, "s.jsonl", [fill(1, now.start_ms)])
    CompetitionStore(database_url).ensure_schema()
    before = snapshot(database_url)
    for extra in ([], ["--apply", "--reason", "why"]):
        with pytest.raises(SystemExit) as refused:
            cli.main(["rebuild", "--from", now.key, "--to", now.key, *extra])
        message = str(refused.value)
        assert f"window {now.key} is still open: its follower records it until" in message
        assert "(nothing was read or written)" in message
    assert snapshot(database_url) == before
