"""The one place where the product's failures become Dagster's.

Every step that records, follows, rebuilds or holds a run's lock runs its work under
:func:`failing_step`: a :class:`~competition_pipeline.errors.PipelineError` leaves it as a
``dg.Failure`` whose ``allow_retries`` is the error's kind. A transient one (the database failed
over, a connection died mid-load, a standby was reached) is retried by the asset's RetryPolicy,
and the retry reconnects through every host of the URL; a terminal one (a wrong password, a
missing table or grant, strict mode's reject budget) fails once, naming the cause. A step that
refuses what cannot be valid (:func:`refused`: a retired window, an apply without a reason, a worker
of another deployment) fails once too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from competition_pipeline import redaction
from competition_pipeline.errors import PipelineError


@contextmanager
def failing_step(what: str | Callable[[], str]) -> Iterator[None]:
    """Turn a product failure raised in the block into a ``dg.Failure`` described as
    ``"{what}: {error}"`` (``what`` may be a callable, read when the failure happens)."""
    try:
        yield
    except PipelineError as exc:
        label = what() if callable(what) else what
        kind = "transient, retried" if exc.transient else "terminal, not retried"
        raise dg.Failure(
            description=f"{label}: {redaction.scrub(str(exc))}",
            metadata={"error": type(exc).__name__, "error_kind": kind},
            allow_retries=exc.transient,
        ) from None


def skipped_tick(exc: PipelineError) -> dg.SkipReason:
    """A sensor tick that could not decide (the database failing over, the stream restarting):
    skipped, not failed; the next tick decides again, on whichever host is the primary then."""
    kind = "transient" if exc.transient else "terminal"
    return dg.SkipReason(f"nothing decided this tick ({kind}): {redaction.scrub(str(exc))}")


def refused(description: str) -> dg.Failure:
    """The failure of a step that refuses (a retired window, a launch that cannot be valid, a
    worker whose code differs): not retried, as every attempt would refuse the same way."""
    return dg.Failure(description=description, allow_retries=False)
