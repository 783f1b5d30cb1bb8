"""What `yun serve` secures before it touches anything: the data dir's lock and its listening socket.

Order matters (ARCHITECTURE.md, money invariants): a start that is going to fail must fail before it
migrates, recovers a hold or loads a model. So `yun serve` first takes the data dir's lock (no other
`yun serve` runs on these files: database, model processes, replica logs), then binds its port, and
only then opens the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

import uvicorn

from yun.errors import YunError

__all__ = ["AnnouncingServer", "CannotServe", "bind_socket", "bound_port", "lock_data_dir"]

LOCK_FILE = "serve.lock"


class CannotServe(YunError):
    """`yun serve` cannot start here (the data dir is in use, the port is taken); nothing was touched."""

    code = "cannot_serve"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data dir's lock for the life of this process (keep the returned file open), or raise
    CannotServe naming the process that holds it. An OS lock (flock): the kernel releases it when the
    process ends, however it ends, so a crash never leaves a stale lock behind."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_file = (data_dir / LOCK_FILE).open("a+")
    except OSError as exc:
        raise CannotServe(f"cannot use the data dir {data_dir}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise CannotServe(
            f"another `yun serve` (pid {holder}) is already serving the data dir {data_dir}; "
            "stop it first, or start this one with its own --data-dir"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the API's listening address now (uvicorn serves on this very socket later), or raise
    CannotServe: a taken port is found before any model is loaded or any database row touched."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise CannotServe(f"cannot listen on {host}:{port}: unknown address ({exc})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restart may bind a port whose old connections linger in TIME_WAIT. On Linux
        # and macOS this never lets two servers listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise CannotServe(f"cannot listen on {host}:{port}: {reason.lower()}") from exc
    return sock


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling `announce` once it accepts connections (after the app's lifespan started
    up), never before: whoever reads "listening" can connect at once."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            with contextlib.suppress(OSError):  # a closed stdout must not stop a server that runs
                self._announce()
