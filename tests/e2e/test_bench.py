"""The benchmark runs at a small size and reports every figure (no timing is asserted)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from competition_harness import hosts
from competition_harness.bench.growth import g_table
from competition_pipeline.tools import cli

pytestmark = pytest.mark.slow


def test_bench_reports_every_figure(pg_admin_url: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--fills", "3000", "--hour-directories", "200", "--backfill-days", "1"]
    args += ["--backfill-fills-per-hour", "50", "--database-url", pg_admin_url, "--json", str(out)]
    assert cli.main(["bench", *args]) == 0
    result = json.loads(out.read_text())
    for figure in ("a_plain_copy", "b_first_recording", "c_rerun_unchanged", "f_backfill"):
        assert result[figure]["rows"] > 0 and result[figure]["seconds"] > 0
    assert result["a_plain_copy"]["preformatted_seconds"] > 0
    assert result["a_plain_copy"]["with_registry_seconds"] > 0
    assert result["b_first_recording"]["rows"] == result["a_plain_copy"]["rows"]
    assert result["b_first_recording"]["rows_inserted"] == result["a_plain_copy"]["rows"]
    assert result["c_rerun_unchanged"]["rows_inserted"] == 0
    assert result["d_peak_rss_mib"] > 0
    assert result["e_sensor_tick"]["directories"] == 200
    f = result["f_backfill"]
    assert f["windows"] == 24 and f["runs"] == 1 and f["instance_storage"] == "postgresql"
    assert f["check_evaluations"] == 3 * 24 and f["dagster_floor_seconds"] > 0
    assert "ms_per_window_beyond_floor" in f
    h = result["h_user_path"]
    assert h["rows"] == result["a_plain_copy"]["rows"]
    # The floor is the same CLI path with an asset and checks that do nothing: the same steps.
    for run in (h["first"], h["unchanged"], h["floor"]):
        assert run["seconds"] > 0
        # Step times come from the run's event log (not the CLI's stderr, which once lost a
        # check's line): the asset and every check, each timed.
        assert set(run["steps"]) == {
            "competition_fill_events",
            "competition_fill_events_reconciles_with_journal",
            "competition_fill_events_no_conflicting_duplicates",
            "competition_fill_events_rejects_within_budget",
        }
        assert all(seconds >= 0 for seconds in run["steps"].values())
    assert set(result["ratios"]) == {
        "b_over_a_rows_per_second",
        "b_over_a_preformatted_rows_per_second",
        "b_over_a2_rows_per_second",
        "c_over_b_seconds",
        "f_over_b_rows_per_second",
        "h_first_over_a_rows_per_second",
        "h_unchanged_over_first_seconds",
        "h_floor_over_first_seconds",
    }
    printed = capsys.readouterr().out
    assert "a. plain COPY (baseline)" in printed and "b/a rows/s" in printed
    assert "Dagster floor" in printed and "h unchanged/first" in printed
    assert "Dagster floor (no-op asset + checks)" in printed and "h floor/first" in printed
    assert "a'. plain COPY of server-formatted text" in printed and "b/a' rows/s" in printed
    assert "a2. plain COPY into the table and its registry" in printed and "b/a2 rows/s" in printed


def test_bench_figure_g_records_into_an_empty_and_a_filled_table(
    pg_admin_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.json"
    argv = ["--only-g", "--fills", "2000", "--stored-rows", "50000"]
    assert cli.main(["bench", *argv, "--database-url", pg_admin_url, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a. plain COPY" not in printed  # g alone
    g = json.loads(out.read_text())["g_stored_rows"]
    assert g["stored_rows"] == 50_000
    for side in ("empty", "stored"):  # every row a first recording, on the fast path
        assert g[side]["rows_inserted"] == g[side]["rows"] > 3_000
    assert g["ratio_rows_per_second"] > 0
    assert "50,000 rows stored" in g_table(g)


def test_bench_figure_r_rebuilds_a_window_against_its_first_recording(
    pg_admin_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = ["--only-r", "--fills", "2000", "--database-url", pg_admin_url, "--json", str(out)]
    assert cli.main(["bench", *argv]) == 0
    printed = capsys.readouterr().out
    assert "a. plain COPY" not in printed and "r. rebuild of one window" in printed
    r = json.loads(out.read_text())["r_rebuild"]
    # Every maker row was given the taker's fee: the rebuild changes exactly those.
    assert 0 < r["rows_changed"] < r["rows"]
    for step in ("dry_run", "apply", "undo"):
        assert r[f"{step}_seconds"] > 0 and r[f"{step}_over_first"] > 0


def test_bench_figures_s_and_x_refresh_standings_both_ways_and_record_with_and_without_the_index(
    pg_admin_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.json"
    argv = ["--only-s", "--only-x", "--s-days", "1,2", "--s-fills-per-hour", "100"]
    argv += ["--fills", "1000", "--database-url", pg_admin_url, "--json", str(out)]
    assert cli.main(["bench", *argv]) == 0
    printed = capsys.readouterr().out
    assert "s. standings refresh" in printed and "x. first recording, index" in printed
    result = json.loads(out.read_text())
    steps = result["s_standings"]["steps"]
    assert set(steps) == {"1d", "2d"} and set(steps["2d"]["refresh"]) >= {
        "1d",
        "index_build_seconds",
    }
    for step in steps.values():  # the totals give the rows' standings, at every size
        assert all(e["equal"] for k, e in step["refresh"].items() if k.endswith("d"))
    x = result["x_index"]
    assert len(x["with_index"]) == len(x["without_index"]) == 2
    inserted = {
        r["b"]["rows_inserted"] for label in ("with_index", "without_index") for r in x[label]
    }
    assert len(inserted) == 1 and inserted.pop() > 0  # every round recorded the same rows


def test_bench_figure_w_runs_the_windows_on_the_service_host_and_on_worker_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Figure w at a small size: every configuration records every row exactly, one run per
    window, the Celery ones on the worker hosts (their names on the runs)."""
    why = hosts.available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run figure w: {why}")
        pytest.skip(why)
    out = tmp_path / "w.json"
    argv = ["--only-w", "--windows", "3", "--w-fills-per-hour", "200", "--json", str(out)]
    assert cli.main(["bench", *argv]) == 0
    printed = capsys.readouterr().out
    assert "a. plain COPY" not in printed and "Celery, 2 worker hosts" in printed
    w = json.loads(out.read_text())["w_workers"]
    configurations = {(c["topology"], c["hosts"]): c for c in w["configurations"]}
    assert set(configurations) == {("local", 0), ("celery", 1), ("celery", 2)}
    for c in configurations.values():
        assert c["exact"] and c["rows"] > 500 and c["runs"] >= 3, c
        assert c["seconds_to_complete"] > 0 and c["run_span_seconds"] > 0
    assert set(configurations[("local", 0)]["runs_by_host"]) == {socket.gethostname()}
    assert set(configurations[("celery", 1)]["runs_by_host"]) == {"worker-a"}
    assert set(configurations[("celery", 2)]["runs_by_host"]) <= {"worker-a", "worker-b"}
