"""Batch processes (fine-tuning runs) on this machine: the `local` backend's tasks.

A task is a child process started from the event loop's thread with PR_SET_PDEATHSIG (as engines are):
it dies with the controller that started it, and the job machinery resumes it from its last checkpoint
when a controller runs again. Its output goes to `task.log` in its working directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path, PurePosixPath

from yun.cluster.backends.engine_process import die_with_parent
from yun.cluster.base import TaskOrder, TaskStatus
from yun.errors import EngineUnavailable

__all__ = ["LocalTasks", "read_from", "task_path"]

_EXIT_GRACE_S = 5.0
"""How long a released task's process has to exit by itself before it is stopped."""


class LocalTasks:
    def __init__(self) -> None:
        self._node = socket.gethostname()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._workdirs: dict[str, Path] = {}

    async def start_task(self, order: TaskOrder) -> TaskStatus:
        current = self._running.get(order.task_id)
        if current is not None and current.poll() is None:
            return self._status(order.task_id, current)
        workdir = Path(order.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **dict(order.env)}
        with (workdir / "task.log").open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {order.task_id}\n".encode())
            log.flush()
            try:
                # From this (the event loop's) thread: PDEATHSIG ties the child to the thread that forked it.
                process = subprocess.Popen(
                    order.command,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                raise EngineUnavailable(f"task {order.task_id}: cannot run {order.command[0]!r}: {exc}") from exc
        self._running[order.task_id] = process
        self._workdirs[order.task_id] = workdir
        return self._status(order.task_id, process)

    async def task(self, task_id: str) -> TaskStatus | None:
        process = self._running.get(task_id)
        return None if process is None else self._status(task_id, process)

    async def stop_task(self, task_id: str, grace_s: float = 10.0) -> None:
        process = self._running.get(task_id)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait)

    async def close(self) -> None:
        for task_id in list(self._running):
            await self.stop_task(task_id, grace_s=5.0)
        self._running.clear()

    async def task_file(self, task_id: str, name: str, offset: int = 0) -> bytes | None:
        workdir = self._workdirs.get(task_id)
        return None if workdir is None else await asyncio.to_thread(read_from, workdir, name, offset)

    async def release_task(self, task_id: str) -> None:
        """Drop a task's record (its files stay in its working directory, the caller's). A task is released
        once it said it ended (a trainer's last event), which may be a moment before its process exits:
        that exit is waited for (then stopped, as Ray's backend does), so no unreaped child is left behind
        for each job (a zombie per job, and its `Popen` kept, for as long as Yun runs)."""
        process = self._running.get(task_id)
        if process is None:
            return
        if process.poll() is None:
            try:
                await asyncio.to_thread(process.wait, _EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                await self.stop_task(task_id, grace_s=_EXIT_GRACE_S)
        del self._running[task_id]
        self._workdirs.pop(task_id, None)

    def _status(self, task_id: str, process: subprocess.Popen[bytes]) -> TaskStatus:
        code = process.poll()
        return TaskStatus(task_id, running=code is None, exit_code=code, node=self._node)


def task_path(name: str) -> PurePosixPath:
    """`name` as a path inside a task's working directory; one that would lead out of it is refused."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{name!r} is not a path inside the task's working directory")
    return path


def read_from(workdir: Path, name: str, offset: int = 0) -> bytes | None:
    """The bytes from `offset` of `workdir/name`, or None if there is no such file."""
    try:
        with (workdir / task_path(name)).open("rb") as f:
            f.seek(offset)
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
