"""A stop is not a failure: SIGTERM and SIGINT end a step at its next safe point.

Dagster raises ``DagsterExecutionInterruptedError`` in a step when its run worker gets SIGINT (or
SIGTERM, which its processes map to SIGINT): wherever the step is, the retry policy turns it into
a retry request and the run into a FAILURE ("Execution was interrupted unexpectedly"), which the
alerts report. A deploy, a daemon restart, a local start stopped or a Celery worker's warm
shutdown (systemd signals every process of the unit) is not a failure: while a step of this
project works, :class:`StopSignals` turns those signals into a flag the step checks between its
loads, so the load in progress commits and the step ends saying why (the run tag
``competition/stopped``).

Dagster enters its interrupt boundary (``raise_execution_interrupts``) around *each* resumption
of a step's generator and restores the handler it found when the generator yields: a handler
set once inside the step is gone after its first yield. :meth:`StopSignals.guard` therefore sets
ours again each time the step's generator is resumed.
"""

import datetime as dt
import signal
import threading
from collections.abc import Iterator
from typing import TypeVar

import dagster as dg

#: Set on a run that ended on a stop signal: why, and when.
STOPPED_TAG = "competition/stopped"

T = TypeVar("T")


class StopSignals:
    """SIGTERM and SIGINT set ``stop`` and are named in ``received`` instead of raising Dagster's
    interrupt in the middle of a load. Only the main thread may set handlers: elsewhere (a
    thread in a test) nothing changes."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.received: list[str] = []

    def _handler(self, signum: int, _frame: object) -> None:
        when = dt.datetime.now(dt.UTC)
        self.received.append(f"{signal.Signals(signum).name} at {when:%H:%M:%S} UTC")
        self.stop.set()

    def arm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._handler)

    def guard(self, events: Iterator[T]) -> Iterator[T]:
        """``events`` with our handlers set again before each resumption (Dagster's boundary
        restores its own around every one). The handlers are left to Dagster at the end."""
        while True:
            self.arm()
            try:
                event = next(events)
            except StopIteration:
                return
            yield event


def mark_stopped(context: dg.OpExecutionContext | dg.AssetExecutionContext, why: str) -> None:
    """Say on the run why it ended early (the UI's run tags, the soak's count)."""
    context.instance.add_run_tags(context.run.run_id, {STOPPED_TAG: why[:500]})
