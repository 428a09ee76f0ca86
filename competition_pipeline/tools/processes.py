"""Dagster's processes started as a service manager starts them."""

import signal


def sigint_at_default() -> None:
    """``preexec_fn`` for a Dagster process: SIGINT at its default disposition.

    Dagster's processes (``dagster api grpc``, ``dagster-daemon``, ``dagster dev``) map SIGTERM to
    SIGINT's handler, and a background job of a non-interactive shell starts with SIGINT ignored,
    which its children inherit: such a code server ignores SIGTERM too (a stop then costs the
    caller's whole grace and a SIGKILL). systemd starts units with default dispositions."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
