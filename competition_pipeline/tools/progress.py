"""Progress lines for long commands (simulator, benchmark, journal publisher), through a log.

A command that writes millions of fills or messages must not look hung, and must not flood the
terminal either: a line at every tenth of a known total, or every few seconds when the total is
unknown (a live publish), each with the elapsed time and the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """``progress(done, total)`` prints ``what: done of total (N%, Ts, R/s)`` at each tenth of
    the way; ``progress(done)`` (total unknown) prints ``what: done (Ts, R/s)`` at most every
    ``every_seconds``. :meth:`finish` prints the final count if it was not the last line shown."""

    def __init__(
        self, what: str, log: Callable[[str], None], *, every_seconds: float = 5.0
    ) -> None:
        self.what, self.log, self.every_seconds = what, log, every_seconds
        self.started = time.perf_counter()
        self._tenth = -1
        self._shown_at = self.started
        self._last_done: int | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.perf_counter()
        if total is not None:
            tenth = done * 10 // total if total else 10
            if tenth <= self._tenth:
                return
            self._tenth = tenth
            self._show(f"{done:,} of {total:,} ({tenth * 10}%, {self._pace(done, now)})", done)
        elif now - self._shown_at >= self.every_seconds:
            self._show(f"{done:,} ({self._pace(done, now)})", done)

    def finish(self, done: int) -> None:
        if done != self._last_done:
            self._show(f"{done:,} ({self._pace(done, time.perf_counter())}), done", done)

    def _pace(self, done: int, now: float) -> str:
        seconds = now - self.started
        rate = f", {done / seconds:,.0f}/s" if seconds > 0 and done else ""
        return f"{seconds:.0f}s{rate}"

    def _show(self, text: str, done: int) -> None:
        self._shown_at = time.perf_counter()
        self._last_done = done
        self.log(f"{self.what}: {text}")
