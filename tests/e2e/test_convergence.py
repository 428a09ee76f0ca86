"""Convergence: the table reaches the journal by itself after faults, and following a growing
hour costs what was appended.

The fault tests run the chaos soak (``competition_harness.soak``): a private PostgreSQL
cluster, the code location as a gRPC server, ``dagster-daemon run`` with the project's dagster.yaml,
the journal sensor every 5 s and the simulator appending live fills. After the fault nothing is
re-run by hand: the soak waits for the table to equal its own reading of the journal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from competition_harness.soak import FAULTS
from competition_pipeline.fills.journal import window_dir
from tests.helpers.follower import open_window
from tests.helpers.journal import T0, WINDOW, append, fill, line, write_segment
from tests.helpers.runs import materialize, metadata
from tests.helpers.soak import CONVERGENCE_BOUND, soak
from tests.helpers.sql import query


def test_the_open_hour_costs_what_was_appended(database_url: str, journal: Path) -> None:
    """N appends give N small loads: each reads the bytes appended since the committed offset
    (counted in its metadata), never the hour from byte 0."""
    segment = write_segment(journal, WINDOW, "live.jsonl", [fill(1, T0 + 1)])
    first = metadata(materialize(database_url, journal))
    assert (first["bytes_read"], first["rows_inserted"]) == (segment.stat().st_size, 2)
    total = segment.stat().st_size
    for n in range(2, 12):
        added = "".join(line(fill(100 * n + i, T0 + 100 * n + i)) + "\n" for i in range(n))
        append(segment, added)
        meta = metadata(materialize(database_url, journal))
        assert meta["incremental"] is True
        assert meta["bytes_read"] == len(added.encode())
        assert (meta["lines_read"], meta["rows_inserted"]) == (n, 2 * n)
        total += len(added.encode())
    again = metadata(materialize(database_url, journal))
    assert again["unchanged"] is True and again["bytes_read"] == 0
    expected = 2 * (1 + sum(range(2, 12)))
    assert query(database_url, "SELECT count(*) FROM competition_fill_events") == [(expected,)]
    assert segment.stat().st_size == total


def test_a_rewritten_segment_is_read_again_in_full_and_reported(
    database_url: str, journal: Path
) -> None:
    segment = write_segment(journal, WINDOW, "live.jsonl", [fill(1, T0 + 1), fill(2, T0 + 2)])
    materialize(database_url, journal)
    segment.write_text(line(fill(3, T0 + 3)) + "\n")  # shrunk: not an append
    meta = metadata(materialize(database_url, journal))
    assert meta["incremental"] is False
    assert "live.jsonl" in meta["rewritten_segments"]
    assert meta["rows_inserted"] == 2  # trade 3, read from line 1
    stored = query(database_url, "SELECT DISTINCT trade_id FROM competition_fill_events ORDER BY 1")
    assert stored == [(1,), (2,), (3,)]  # nothing recorded is ever removed


def test_a_late_segment_in_a_closed_hour_reads_only_that_segment(
    database_url: str, journal: Path
) -> None:
    write_segment(journal, WINDOW, "seg-1.jsonl", [fill(i, T0 + i) for i in range(1, 50)])
    materialize(database_url, journal)
    late = window_dir(journal, WINDOW) / "seg-2.jsonl"
    late.write_text(line(fill(500, T0 + 500)) + "\n")
    meta = metadata(materialize(database_url, journal))
    # Both segments are the window's; only the late one's bytes were read.
    assert (meta["segments"], meta["bytes_read"], meta["rows_inserted"]) == (
        2,
        late.stat().st_size,
        2,
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_the_table_converges_after_a_single_fault(tmp_path: Path, fault: str) -> None:
    # Inside the hour and past the closing hour's lateness: across the hour's turn the runs were
    # the closing and the new hour's followers alone (seen: {'FOLLOWING': 2}, no SUCCESS).
    open_window(at_least=180, settled=90)
    result = soak(
        tmp_path,
        *("--faults", fault, "--max-faults", "1", "--duration", "60"),
        *("--hours", "1", "--fills-per-hour", "500"),
    )
    assert result["faults"][fault] == 1
    assert result["missing"] == 0 and result["extra"] == 0
    # Dead runs neither stay STARTED nor keep the pool full: nothing is left waiting.
    assert result["runs"].get("SUCCESS", 0) > 0
    waiting = {"QUEUED", "STARTED", "STARTING", "NOT_STARTED"} & set(result["runs"])
    assert not waiting, result["runs"]
    assert result["rows_expected"] > 1000
    assert result["seconds_to_converge"] <= CONVERGENCE_BOUND


@pytest.mark.slow
def test_the_chaos_soak_converges_after_every_kind_of_fault(tmp_path: Path) -> None:
    result = soak(tmp_path, "--duration", "180", "--seed", "5")
    assert set(FAULTS) <= set(result["faults"]), result["faults"]
    assert result["missing"] == 0 and result["extra"] == 0


@pytest.mark.slow
def test_a_deploy_and_a_daemon_restart_with_sigterm_fail_no_run(tmp_path: Path) -> None:
    """The code server's group SIGTERM and started again (a deploy), and the daemon's (a
    restart), while the open hour is followed: the follower's run ends SUCCESS saying why
    (``competition/stopped``), a new one follows the hour, no run fails, the table is exact and
    never two followers of one hour follow it at once.

    Within one hour, so that the stops are all that happens to the follower: a run launched while
    the code server shuts down at the hour's turn is tests/e2e/test_deploy_launch.py's subject."""
    # The soak and its convergence well inside the hour in progress, past the closing hour's
    # lateness (its follower would otherwise be a third run for the stops to catch).
    open_window(at_least=300, settled=90)
    # The soak stops injecting once both stops are made (--max-faults 2): --duration only bounds
    # that, with room for a stop that takes half a minute on a loaded machine (tests beside it).
    result = soak(
        tmp_path,
        *("--faults", "sigterm-code-server,sigterm-daemon", "--max-faults", "2"),
        *("--duration", "150", "--hours", "1", "--fills-per-hour", "500", "--seed", "29"),
    )
    assert result["faults"] == {"sigterm-code-server": 1, "sigterm-daemon": 1}
    assert result["missing"] == 0 and result["extra"] == 0
    assert "FAILURE" not in result["runs"], result["runs"]
    assert result["stopped_runs"].get("SUCCESS", 0) >= 1, result
    assert set(result["stopped_runs"]) <= {"SUCCESS"}, result
    assert all(seconds < 30 for _, seconds in result["stops"]), result["stops"]
    assert result["followers_at_once_max"] == 1, result["followers_at_once"]
