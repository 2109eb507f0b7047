"""Is a port free to serve on? granian binds with ``SO_REUSEPORT``, so a second server on a busy
port starts anyway and the kernel splits connections between the two: both ``serve`` and
``dev-canvas`` ask first and refuse with one line."""

from __future__ import annotations

import socket

__all__ = ["port_free"]


def port_free(host: str, port: int) -> bool:
    """A plain bind (no ``SO_REUSEPORT``) fails while anyone listens there, reuse or not."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError:
        return False
    return True
