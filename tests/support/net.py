"""Loopback networking for tests."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["free_port", "listener_pid", "refuses", "taken_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def refuses(url: str) -> bool:
    """Nothing listens at `url` (`http://host:port`) any more: its process is gone."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def taken_port(*, listen: bool) -> Iterator[int]:
    """A port on 127.0.0.1 held bound for the block: `listen=True`, so a server cannot bind it ("address
    already in use"); `listen=False`, so nothing else can take it and a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if listen:
            s.listen()
        yield int(s.getsockname()[1])


def listener_pid(host: str, port: int) -> int:
    """The PID of this user's process listening on `host:port` (IPv4), found through /proc: for killing an
    engine a backend started, whichever backend and process tree it runs in."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    raise LookupError(f"no process of ours listens on {host}:{port}")
