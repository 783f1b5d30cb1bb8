"""One replica kept alive on this node: its engine process, restarted when it dies, within a budget.

Both backends supervise the same way: the `local` backend holds one `SupervisedReplica` per replica, and
each Ray actor holds one for its replica on its node (Ray itself only restarts the actor, when the actor's
process or node dies). A first start that fails is final and raised to whoever placed the replica: a bad
model path should be reported at once, not retried. A replica that was ready and died is restarted with
exponential backoff, at most `max_restarts` times within `window_s`; beyond that it stays `failed` with its
last error (exit code and log tail) and is not started again, so a model that crashes on every request
does not spin the node's CPU reloading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yun.cluster.backends.engine_process import EngineProcess, start_engine
from yun.cluster.base import ReplicaOrder, ReplicaState, ReplicaStatus
from yun.errors import EngineUnavailable

__all__ = ["EventSink", "RestartPolicy", "SupervisedReplica"]

log = logging.getLogger("yun.cluster")

EventSink = Callable[[str, str], None]
"""Called with (kind, message) for each event of the replica: started, ready, died, restarted, failed, stopped."""


@dataclass(frozen=True)
class RestartPolicy:
    """How a replica whose engine died is brought back."""

    max_restarts: int = 3
    """Restarts allowed within `window_s`; one more death makes the replica `failed`."""
    window_s: float = 600.0
    backoff_s: float = 1.0
    """Wait before the first restart in the window; doubled for each further one."""
    max_backoff_s: float = 30.0
    poll_s: float = 0.5
    """How often the process is checked."""
    hung_after_s: float = 60.0
    """An engine that is alive but has not answered its health check for this long is hung (a deadlock, a
    stopped process, a wedged GPU): it is killed and restarted like one that died. Long, because a busy
    engine still answers /health (llama.cpp serves it outside its task queue) and a false alarm would cut
    every stream on it."""
    probe_s: float = 5.0
    """How often a running engine's health is probed (each probe waits up to this long for its answer)."""


class SupervisedReplica:
    """The engine of one replica on this node, and its state for `ReplicaStatus`."""

    def __init__(
        self,
        order: ReplicaOrder,
        *,
        host: str,
        node: str,
        log_dir: Path,
        policy: RestartPolicy,
        on_event: EventSink,
        restarts: int = 0,
    ) -> None:
        self.order = order
        self.host = host
        self.node = node
        self.log_dir = log_dir
        self.policy = policy
        self.state: ReplicaState = "starting"
        self.restarts = restarts
        self.error: str | None = None
        self.engine: EngineProcess | None = None
        self._on_event = on_event
        self._recent: deque[float] = deque()  # monotonic times of restarts within the window
        self._first: asyncio.Future[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def status(self) -> ReplicaStatus:
        ready = self.state == "ready" and self.engine is not None
        return ReplicaStatus(
            replica_id=self.order.replica_id,
            deployment_id=self.order.deployment_id,
            state=self.state,
            endpoint=self.engine.endpoint if ready and self.engine is not None else None,
            node=self.node,
            restarts=self.restarts,
            error=self.error,
        )

    async def start(self) -> ReplicaStatus:
        """Start the engine and wait until it answers; callers that come while it starts wait for the same
        start. Raises EngineUnavailable (and the replica is `failed`) if it cannot start."""
        if self._first is None:
            self._first = asyncio.ensure_future(self._start_first())
        await asyncio.shield(self._first)  # a caller that gives up does not abort the start
        return self.status()

    async def _start_first(self) -> None:
        self._event("started", f"on {self.node}")
        try:
            self.engine = await start_engine(self.order, self.host, self.log_dir)
        except EngineUnavailable as exc:
            self._fail(exc.message)
            raise
        self.state = "ready"
        self._event("ready", self.engine.endpoint)
        self._watcher = asyncio.create_task(self._watch(), name=f"yun-replica-{self.order.replica_id}")

    async def _watch(self) -> None:
        answered = probed = time.monotonic()
        while True:
            await asyncio.sleep(self.policy.poll_s)
            engine = self.engine
            if engine is None:
                continue
            if engine.returncode is None:
                now = time.monotonic()
                if now - probed < self.policy.probe_s:
                    continue
                probed = now
                if await engine.answers(timeout_s=self.policy.probe_s):
                    answered = probed = time.monotonic()
                    continue
                silent = time.monotonic() - answered
                if silent < self.policy.hung_after_s or engine.returncode is not None:
                    continue  # not yet hung; or it just died, which the next turn reports with its exit code
                await engine.terminate(grace_s=2.0)
                self.error = (
                    f"engine stopped answering its health check for {silent:.0f}s while its process ran; "
                    "killed to restart it"
                )
            else:
                self.error = engine.exit_reason()
            self.state = "restarting"
            self._event("died", self.error)
            if not await self._restart():
                return
            answered = probed = time.monotonic()

    async def _restart(self) -> bool:
        """Bring the engine back within the budget; False once the replica is `failed`."""
        policy = self.policy
        while True:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > policy.window_s:
                self._recent.popleft()
            if len(self._recent) >= policy.max_restarts:
                self._fail(f"{self.error}\nnot restarted again: {len(self._recent)} restarts in {policy.window_s:g}s")
                return False
            await asyncio.sleep(min(policy.max_backoff_s, policy.backoff_s * 2 ** len(self._recent)))
            self._recent.append(time.monotonic())
            self.restarts += 1
            try:
                self.engine = await start_engine(self.order, self.host, self.log_dir)
            except EngineUnavailable as exc:
                self.error = exc.message
                self._event("died", exc.message)
                continue
            self.state = "ready"
            self._event("restarted", f"{self.engine.endpoint} (restart {self.restarts})")
            return True

    def _fail(self, error: str) -> None:
        self.state = "failed"
        self.error = error
        self._event("failed", error)

    async def stop(self) -> None:
        """Stop supervising and stop the engine."""
        for task in (self._watcher, self._first):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, EngineUnavailable):
                    await task
        if self.engine is not None:
            await self.engine.terminate()
        if self.state != "stopped":
            self.state = "stopped"
            self._event("stopped", "")

    def _event(self, kind: str, message: str) -> None:
        level = logging.WARNING if kind in ("died", "failed") else logging.INFO
        log.log(level, "replica %s %s%s", self.order.replica_id, kind, f": {message}" if message else "")
        self._on_event(kind, message)
