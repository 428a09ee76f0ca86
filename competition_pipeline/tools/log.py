"""The operator tools' one log: ``[command] message`` lines on stderr, flushed at once.

``competition-pipeline`` sets the command's prefix once (:func:`configure`, from ``cli.main``):
``[competition-pipeline]`` for the local start and the admin commands, ``[simulate]``,
``[publish]``, ``[bench]``, and ``[soak HH:MM:SS]`` (a soak runs for half an hour: its lines carry
the time). Every tool module logs through :func:`log`; long loops pass it to ``Progress``.
"""

from __future__ import annotations

import sys
import time

_prefix = "competition-pipeline"
_clock = False


def configure(prefix: str, *, clock: bool = False) -> None:
    """From now on lines read ``[prefix] message`` (``[prefix HH:MM:SS] message`` with clock)."""
    global _prefix, _clock
    _prefix, _clock = prefix, clock


def log(message: str) -> None:
    """Print ``message`` to stderr at once (the stream of the moment: a test may capture it),
    without any secret this process knows (``redaction.scrub``)."""
    from competition_pipeline import redaction

    stamp = f" {time.strftime('%H:%M:%S')}" if _clock else ""
    print(f"[{_prefix}{stamp}] {redaction.scrub(message)}", file=sys.stderr, flush=True)
