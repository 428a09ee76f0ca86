"""A stop is not a failure: SIGTERM and SIGINT end a step at its next safe point.

Dagster raises ``DagsterExecutionInterruptedError`` in a step when its run worker gets SIGINT (or
SIGTERM, which its processes map to SIGINT): wherever the step is, the retry policy turns it into
a retry request and the run into a FAILURE ("Execution was interrupted unexpectedly"), which the
alerts report. A deploy, a daemon restart, a local start stopped or a Celery worker's warm
shutdown (systemd signals every process of the unit) is not a failure: while a step of this
project works, :func:`stop_on_signals` turns those signals into a flag the step checks between
its loads, so the load in progress commits and the step ends saying why (the run tag
``competition/stopped``).
"""

import datetime as dt
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

#: Set on a run that ended on a stop signal: why, and when.
STOPPED_TAG = "competition/stopped"


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """SIGTERM and SIGINT set ``stop`` (and are named in the yielded list) instead of raising
    Dagster's interrupt in the middle of a load; the handlers before are restored at the end
    unless a signal came (then both stay ignored: the run worker is ending). Only the main
    thread may set handlers: elsewhere (a thread in a test) nothing changes."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(f"{signal.Signals(signum).name} at {dt.datetime.now(dt.UTC):%H:%M:%S} UTC")
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            # Once stopped, the process is ending: a second signal (a group signalled again, a
            # second Ctrl-C) must not interrupt the run's clean end (SIGKILL still ends it).
            signal.signal(signum, signal.SIG_IGN if received else old)


def mark_stopped(context: dg.OpExecutionContext | dg.AssetExecutionContext, why: str) -> None:
    """Say on the run why it ended early (the UI's run tags, the soak's count)."""
    context.instance.add_run_tags(context.run.run_id, {STOPPED_TAG: why[:500]})
