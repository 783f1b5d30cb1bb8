"""The Ray actor that is one batch task (a fine-tuning run): it runs the task's process on the node Ray
placed it on, in a working directory of that node, and answers for it.

The driver ships the task's inputs with the actor's arguments (through Ray's object store) and reads what
the process writes back through `read` (its events as they grow, its adapter once it is done), so no disk
needs to be shared between the nodes and the controller. The actor is detached: a controller that dies
leaves the task running, and the next one finds it by name. It is not restarted by Ray: a task whose node
dies is lost, and the job machinery runs it again (it resumes from its last checkpoint when it lands on a
node that still has its working directory).

The process is a child of the actor's event-loop thread with PR_SET_PDEATHSIG, so it dies with the actor.
Ray imports this module on every node: Yun must be installed there (same version) for the actor to run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import ray

from yun.cluster.backends.engine_process import die_with_parent
from yun.cluster.backends.tasks import read_from, task_path
from yun.cluster.base import TaskOrder, TaskStatus

__all__ = ["TaskActor"]


class TaskActor:
    """One batch task on one Ray node (an async actor: every method runs on one event loop)."""

    def __init__(self, order: TaskOrder, inputs: dict[str, bytes]) -> None:
        context = ray.get_runtime_context()
        self._task_id = order.task_id
        self._node = context.get_node_id()
        # Kept across runs of the same task on this node: a run started again here resumes from the
        # checkpoints the previous one left.
        self._dir = Path(context.get_temp_dir()) / "yun-tasks" / order.task_id
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in inputs.items():
            target = self._dir / task_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        with (self._dir / "task.log").open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {order.task_id}\n".encode())
            log.flush()
            # The constructor runs on the actor's event-loop thread: PDEATHSIG ties the child to it.
            self._process = subprocess.Popen(
                order.command,
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **dict(order.env)},
                preexec_fn=die_with_parent,
            )

    async def status(self) -> TaskStatus:
        code = self._process.poll()
        return TaskStatus(self._task_id, running=code is None, exit_code=code, node=self._node)

    async def read(self, name: str, offset: int) -> bytes | None:
        return read_from(self._dir, name, offset)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s`."""
        if self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self._process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self._process.poll() is None:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)

    async def release(self) -> None:
        """Remove the working directory (the driver then kills the actor)."""
        await self.stop(5.0)
        await asyncio.to_thread(shutil.rmtree, self._dir, True)
