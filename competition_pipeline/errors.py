"""The product's failures, in two kinds: transient (another attempt may succeed) and terminal.

One hierarchy decides, at the boundary where a failure is named, whether it is worth a retry: a
database that went away, failed over or was reached on its standby, a stream server restarting
are transient (the attempt fails; the retry reconnects, through every host of the URL); a wrong
password, a missing table or grant, a corrupt closed segment, a reject budget exceeded are
terminal (one failure naming the cause, no retry storm). ``defs/`` turns either into a Dagster
failure in one place (``defs/failures.py``). The model is dlt's ``DestinationTransientException``
/ ``DestinationTerminalException`` mixins; imported by every layer, it imports nothing.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """A failure the product names; :attr:`transient` says whether a retry may succeed."""

    transient: ClassVar[bool] = False

    @property
    def retryable(self) -> bool:
        """The older name of :attr:`transient`."""
        return self.transient


class TransientError(PipelineError):
    """The server, the network or a failover: the next attempt may succeed."""

    transient = True


class TerminalError(PipelineError):
    """The input, the schema or the rights: every attempt fails the same way."""

    transient = False


def with_kind(cls: type, retryable: bool | None, transient: type, terminal: type) -> type:
    """The concrete class for a ``Base(message, retryable=...)`` call: lets the older call form
    of :class:`StoreError` and ``SourceError`` pick their transient or terminal subclass."""
    if retryable is None:
        return cls
    return transient if retryable else terminal
