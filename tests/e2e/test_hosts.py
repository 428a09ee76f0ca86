"""Runs on several hosts, for real: ``CeleryRunLauncher`` over a RabbitMQ broker, two worker hosts
in network namespaces of their own, and one of them killed whole with a run in flight.

The soak's Celery topology (``competition-pipeline soak --topology celery``,
competition_harness/hosts.py) makes the hosts: a bridge, a namespace per worker host with its own
hostname (``unshare --uts``) and ``DAGSTER_HOME``, running ``celery -A dagster_celery.app worker``;
the daemon and the code server stay in the root namespace with docs/examples/dagster.celery.yaml;
the soak's own PostgreSQL and RabbitMQ listen on the bridge's address, so the workers reach them
over their veth. Nothing is re-run by hand: the lost run is found by the journal sensor's liveness
rule and its window recorded again on the other host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from competition_harness import hosts
from tests.helpers.soak import soak

WAITING = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}


@pytest.fixture(autouse=True)
def _hosts_available() -> None:
    why = hosts.available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the multi-host test: {why}")
        pytest.skip(why)


@pytest.mark.slow
def test_a_worker_host_killed_mid_run_and_the_table_is_exact(tmp_path: Path) -> None:
    result = soak(
        tmp_path,
        *("--topology", "celery", "--hosts", "2"),
        *("--faults", "kill-host", "--max-faults", "1", "--duration", "60"),
        *("--hours", "5", "--fills-per-hour", "500"),
    )
    assert result["faults"] == {"kill-host": 1}
    assert result["windows"] == 6  # five closed hours and the open one
    assert result["rows_expected"] > 2500
    assert result["missing"] == 0 and result["extra"] == 0
    # Both hosts executed runs (the killed one at least the run it lost).
    assert set(result["hosts"]) == {"worker-a", "worker-b"}, result["hosts"]
    # The run lost with its host was marked failed (nothing left STARTED or waiting).
    assert result["runs"].get("FAILURE", 0) >= 1, result["runs"]
    assert not WAITING & set(result["runs"]), result["runs"]
    # Celery, Dagster and the soak logged the broker URL, never its password.
    assert result["broker_password_in_logs"] is False


@pytest.mark.slow
def test_a_run_delivered_twice_by_the_broker_records_once(tmp_path: Path) -> None:
    """The broker delivers a run's task again while the run is in flight on one host (the soak
    sends the same task, same arguments, as after a lost acknowledgement); the other host takes
    it and Dagster ignores it: one execution, the window's rows once."""
    result = soak(
        tmp_path,
        *("--topology", "celery", "--hosts", "2"),
        *("--faults", "redeliver", "--max-faults", "1", "--duration", "60"),
        *("--hours", "3", "--fills-per-hour", "500"),
    )
    assert result["faults"] == {"redeliver": 1}
    (run,) = result["redelivered"].values()
    # One RUN_START: the second delivery started no execution. The run succeeded, or it is the
    # open hour's follower, still following (alive: a STARTED run without its liveness lock is
    # counted as waiting by the last assertion).
    assert run["second_delivery_ignored"] is True and run["run_starts"] == 1, run
    assert run["status"] in ("SUCCESS", "STARTED"), run
    assert result["rows_expected"] > 1500
    assert result["missing"] == 0 and result["extra"] == 0
    assert not WAITING & set(result["runs"]), result["runs"]


@pytest.mark.slow
def test_a_workers_nats_connection_cut_mid_window_and_the_table_is_exact(tmp_path: Path) -> None:
    """``--source nats``: a worker host's connection to NATS reset while a run of it reads a
    window (``ss -K`` in its namespace); the step is retried, nothing of the failed read kept."""
    result = soak(
        tmp_path,
        *("--topology", "celery", "--hosts", "2", "--source", "nats"),
        *("--faults", "nats-cut", "--max-faults", "1", "--duration", "60"),
        *("--hours", "3", "--fills-per-hour", "500"),
    )
    assert result["faults"] == {"nats-cut": 1}
    assert result["rows_expected"] > 1500
    assert result["missing"] == 0 and result["extra"] == 0
    assert not WAITING & set(result["runs"]), result["runs"]
