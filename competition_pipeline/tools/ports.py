"""A free TCP port, for the servers the tools, the harness and the tests start."""

from __future__ import annotations

import socket


def free_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on now at ``address`` (the OS picks it; free until someone binds
    it)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
