"""Issue 33: what the journal's files, or anyone who can write them, can make a run do.

Each test is one of the issue's reproductions, through the interface it was found in: a run of
the partition (Dagster's ``materialize``), its stored rows, its metadata and its log.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import dagster as dg

from competition_pipeline.fills.journal import window_dir
from competition_pipeline.fills.source import MAX_LINE
from competition_pipeline.recording.fill_events import MAX_STORED_REJECTS
from tests.helpers.journal import T0, WINDOW, fill, write_segment
from tests.helpers.runs import materialize, metadata
from tests.helpers.sql import query


def _run(database_url: str, journal: Path, **kwargs) -> tuple[dg.ExecuteInProcessResult, str]:
    """A run of the window and its log's messages (warnings included)."""
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(database_url, journal, instance=instance, **kwargs)
    logs = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    return result, logs


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text("SECRET-ROOT-PASSWORD\nSECRET-TOKEN\n")
    return outside


def _stored_text(database_url: str) -> str:
    rows = query(database_url, "SELECT raw_line, reason FROM competition_fill_rejects")
    return repr(rows)


def test_a_run_of_a_symlinked_hour_reads_nothing_outside_the_journal(
    database_url: str, journal: Path, tmp_path: Path
) -> None:
    """On main the run succeeded, '1 fills, 2 rows inserted, 2 rejects', and stored the outside
    file's lines word for word in raw_line."""
    hour = window_dir(journal, WINDOW)
    hour.parent.mkdir(parents=True)
    hour.symlink_to(_outside(tmp_path), target_is_directory=True)
    result, logs = _run(database_url, journal)
    assert result.success
    meta = metadata(result)
    assert (meta["lines_read"], meta["rejects"]) == (0, 0)
    assert "SECRET" not in _stored_text(database_url)
    assert query(database_url, "SELECT count(*) FROM competition_fill_rejects") == [(0,)]
    assert "'date=2026-11-20/hour=03': a symbolic link is not part of the journal" in logs


def test_a_run_under_a_symlinked_date_directory_reads_nothing_outside(
    database_url: str, journal: Path, tmp_path: Path
) -> None:
    outside = _outside(tmp_path)
    (outside / "hour=03").mkdir()
    (outside / "secret.jsonl").rename(outside / "hour=03" / "secret.jsonl")
    (journal / "date=2026-11-20").symlink_to(outside, target_is_directory=True)
    result, logs = _run(database_url, journal)
    assert result.success
    assert metadata(result)["lines_read"] == 0
    assert "SECRET" not in _stored_text(database_url)
    assert "'date=2026-11-20': a symbolic link is not part of the journal" in logs


def test_a_gz_of_newlines_stores_a_bounded_number_of_rejects_and_counts_the_rest(
    database_url: str, journal: Path
) -> None:
    """On main a 1,004-byte .gz of a million newlines stored a million reject rows (181 MB)."""
    lines = 200_000
    directory = window_dir(journal, WINDOW)
    directory.mkdir(parents=True)
    (directory / "seg.jsonl.gz").write_bytes(gzip.compress(b"\n" * lines))
    assert (directory / "seg.jsonl.gz").stat().st_size < 1_000
    result, logs = _run(database_url, journal, checks=True)
    assert result.success  # tolerant mode: quarantined and counted; strict mode is unchanged
    meta = metadata(result)
    assert meta["rejects"] == lines
    assert meta["rejects_not_stored"] == lines - MAX_STORED_REJECTS
    assert meta["accounting_balanced"]
    stored = query(database_url, "SELECT count(*) FROM competition_fill_rejects")[0][0]
    assert stored == MAX_STORED_REJECTS
    assert f"{lines - MAX_STORED_REJECTS} of them counted but not stored" in logs
    # rejects_within_budget counts every reject, stored or not: an ERROR above its threshold.
    (check,) = result.get_asset_check_evaluations()[-1:]
    assert check.check_name == "rejects_within_budget" and not check.passed
    assert check.metadata["rejects"].value == lines
    assert check.metadata["rejects_not_stored"].value == lines - MAX_STORED_REJECTS
    # A re-run stores nothing more (the bound holds for the window, not per run).
    assert materialize(database_url, journal).success
    assert query(database_url, "SELECT count(*) FROM competition_fill_rejects")[0][0] == stored


def test_a_line_over_the_limit_is_rejected_with_an_excerpt_its_length_and_hash(
    database_url: str, journal: Path
) -> None:
    """On main a .gz expanding to one 200 MB line was stored whole in raw_line. Here 3 MB (the
    memory of the 200 MB case is the benchmark's: bench long-line)."""
    long_line = b'{"type":"OrderFilled","pad":"' + b"A" * (3 * 1024 * 1024) + b'"}'
    write_segment(journal, WINDOW, "a.jsonl", [fill(1, T0 + 1)])
    directory = window_dir(journal, WINDOW)
    (directory / "b.jsonl.gz").write_bytes(gzip.compress(long_line + b"\n"))
    result = materialize(database_url, journal)
    assert result.success
    assert metadata(result)["rejects"] == 1
    ((raw, reason, length),) = query(
        database_url, "SELECT raw_line, reason, length(raw_line) FROM competition_fill_rejects"
    )
    assert length <= 1024 and long_line.startswith(raw.encode())
    assert reason.startswith(
        f"line too long: {len(long_line)} bytes exceed the limit of {MAX_LINE}"
    )
    assert hashlib.sha256(long_line).hexdigest() in reason
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(2,)]


def test_journal_file_names_are_shown_as_text_never_rendered_as_markdown(
    database_url: str, journal: Path
) -> None:
    """A name with ``](javascript:...)`` broke out of its code span in the run's metadata."""
    name = "x`](javascript:alert(1))`.txt"
    write_segment(journal, WINDOW, name, ["not a segment"])
    result = materialize(database_url, journal)
    (event,) = result.get_asset_materialization_events()
    ignored = event.materialization.metadata["ignored_files"]
    assert isinstance(ignored, dg.TextMetadataValue)
    assert ignored.value == f"date=2026-11-20/hour=03/{name}"
