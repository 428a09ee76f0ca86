"""The deployment fingerprint a worker compares with the code server's (deployment.py)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from competition_pipeline import deployment, settings


def test_the_fingerprint_names_the_rules_and_no_address_or_secret() -> None:
    base = settings.load({})
    values = deployment.fingerprint(base)
    assert set(values) == {"code", "recording_version", *deployment.RULES}
    # A worker may reach NATS by another address; addresses are not rules.
    elsewhere = replace(base, nats_url="nats://user:secret@10.0.0.1:4222")
    assert deployment.fingerprint(elsewhere) == values
    assert "secret" not in deployment.encode(deployment.fingerprint(elsewhere))


def test_a_difference_is_named_with_both_values() -> None:
    planned = deployment.fingerprint(settings.load({}))
    worker = deployment.fingerprint(settings.load({"FILL_PARTITIONS_START": "2025-06-01-00:00"}))
    assert deployment.mismatch(planned, planned) is None
    assert deployment.mismatch(planned, worker) == (
        f"partitions_start: {planned['partitions_start']} != 2025-06-01-00:00"
    )
    assert deployment.decode(deployment.encode(planned)) == planned


def test_the_code_digest_covers_what_a_run_executes_not_the_cli(tmp_path: Path) -> None:
    package = tmp_path / "competition_pipeline"
    shutil.copytree(deployment.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    digest = deployment.digest_of(package)
    assert digest == deployment.code_digest()
    with (package / "tools" / "cli.py").open("a") as source:
        source.write("# a patched CLI\n")
    assert deployment.digest_of(package) == digest
    with (package / "recording" / "fill_events.py").open("a") as source:
        source.write("# another release\n")
    assert deployment.digest_of(package) != digest
