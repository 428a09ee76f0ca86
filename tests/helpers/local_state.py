"""The state file a running local start (``competition-pipeline up``) leaves for the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from competition_pipeline.tools import local_state


def write_state(state: Path, monkeypatch: pytest.MonkeyPatch, url: str, **extra) -> Path:
    """The state file as a running ``up`` (this process) writes it."""
    monkeypatch.setenv("COMPETITION_DATABASE_URL", url)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    path = local_state.write_local_state(state, ui="http://127.0.0.1:3000", **extra)
    monkeypatch.delenv("COMPETITION_DATABASE_URL")
    monkeypatch.delenv("DAGSTER_POSTGRES_URL")
    return path
