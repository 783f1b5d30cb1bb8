"""Loopback networking for tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

__all__ = ["free_port", "taken_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def taken_port(*, listen: bool) -> Iterator[int]:
    """A port on 127.0.0.1 held bound for the block: `listen=True`, so a server cannot bind it ("address
    already in use"); `listen=False`, so nothing else can take it and a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if listen:
            s.listen()
        yield int(s.getsockname()[1])
