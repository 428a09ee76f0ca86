"""``competition-pipeline soak`` and ``bench`` come from the test harness (harness/, distribution
competition-pipeline-harness), found as entry points: with the harness installed (bin/test's
setup) they keep their names and options; without it they say how to install it."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from competition_pipeline.tools import cli
from tests.helpers.environment import REPO

CLI = str(Path(sys.executable).with_name("competition-pipeline"))


def _help(*args: str) -> str:
    done = subprocess.run(
        [CLI, *args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_the_installed_harness_adds_soak_and_bench_with_their_options() -> None:
    installed = importlib.metadata.entry_points(group=cli.COMMANDS_GROUP)
    modules = {e.name: e.module for e in installed}
    assert modules["soak"] == modules["bench"] == "competition_harness.commands"
    top = _help()
    assert "chaos soak: real processes" in top and "benchmark: the pipeline" in top
    soak = _help("soak")
    for option in ("--duration", "--seed", "--faults", "--source", "--topology", "--timeout"):
        assert option in soak
    assert "kill-run" in soak and "failover" in soak
    bench = _help("bench")
    for option in ("--fills", "--database-url", "--stored-rows", "--only-w", "--json"):
        assert option in bench


def test_without_the_harness_its_commands_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The one fault this cannot cause for real without a second virtualenv: the harness's
    # distribution absent. Its entry points are what the CLI asks importlib.metadata for.
    real = importlib.metadata.entry_points

    def without_harness(**selection):
        found = real(**selection)
        if selection.get("group") == cli.COMMANDS_GROUP:
            return importlib.metadata.EntryPoints(())
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", without_harness)
    listed = cli.build_parser().format_help()
    assert "soak" in listed and "bench" in listed and "pip install -e ./harness" in listed
    for argv in (["soak", "--duration", "60", "--seed", "3"], ["bench"]):
        assert cli.main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines == [
            f"error: {argv[0]} is part of the test harness, which is not installed here:"
            " pip install -e ./harness (bin/test's setup installs it)"
        ]
    # The product's own commands still refuse an argument they do not know.
    with pytest.raises(SystemExit) as refused:
        cli.main(["schema", "--no-such-option"])
    assert refused.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
