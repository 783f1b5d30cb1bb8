"""The `local` cluster backend: each replica is an engine process of this one, bound to 127.0.0.1.

For one machine (`yun serve`'s default). The replicas live and die with this process: their engines are
its children with PR_SET_PDEATHSIG, so `close()` always stops them and a killed controller leaves none
behind. A replica whose engine dies is restarted by its own supervisor task (see `supervised.py`).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from yun.cluster.backends.supervised import RestartPolicy, SupervisedReplica
from yun.cluster.base import ClusterEvent, ReplicaOrder, ReplicaStatus

__all__ = ["LocalBackend"]

_HOST = "127.0.0.1"
_EVENTS_KEPT = 1000


class LocalBackend:
    """Replicas as supervised child processes.

    - `log_dir`: one log file per replica (`<replica_id>.log`), appended to on every start.
    - `max_restarts`, `restart_window_s`: a replica whose engine died more than `max_restarts` times within
      the window is `failed` and not restarted again.
    - `backoff_s`, `max_backoff_s`: the wait before a restart, doubled for each restart within the window.
    - `hung_after_s`, `probe_s`: an engine whose process runs but whose health check has not answered for
      `hung_after_s` (probed every `probe_s`) is killed and restarted like one that died.
    """

    name = "local"

    def __init__(
        self,
        log_dir: Path,
        *,
        max_restarts: int = 3,
        restart_window_s: float = 600.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        hung_after_s: float = 60.0,
        probe_s: float = 5.0,
    ) -> None:
        self.log_dir = log_dir
        self.policy = RestartPolicy(
            max_restarts=max_restarts,
            window_s=restart_window_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            hung_after_s=hung_after_s,
            probe_s=probe_s,
        )
        self._node = socket.gethostname()
        self._replicas: dict[str, SupervisedReplica] = {}
        self._events: deque[ClusterEvent] = deque(maxlen=_EVENTS_KEPT)

    async def start(self) -> None:
        """Nothing to connect to: the compute is this machine."""

    async def place(self, order: ReplicaOrder) -> ReplicaStatus:
        current = self._replicas.get(order.replica_id)
        if current is not None and current.state not in ("failed", "stopped"):
            return await current.start()  # running, or starting: wait for that start, begin none
        replica = SupervisedReplica(
            order,
            host=_HOST,
            node=self._node,
            log_dir=self.log_dir,
            policy=self.policy,
            on_event=lambda kind, message: self._record(order.replica_id, kind, message),
        )
        self._replicas[order.replica_id] = replica
        return await replica.start()

    async def stop(self, replica_id: str) -> None:
        replica = self._replicas.pop(replica_id, None)
        if replica is not None:
            await replica.stop()

    async def replicas(self) -> Sequence[ReplicaStatus]:
        return [replica.status() for replica in self._replicas.values()]

    def events(self, since: float = 0.0) -> Sequence[ClusterEvent]:
        return [event for event in self._events if event.at > since]

    async def close(self, *, stop_replicas: bool = True) -> None:
        """Stop every replica: they are this process's children, so they cannot outlive it anyway."""
        for replica_id in list(self._replicas):
            await self.stop(replica_id)

    def _record(self, replica_id: str, kind: str, message: str) -> None:
        self._events.append(ClusterEvent(at=time.time(), replica_id=replica_id, kind=kind, message=message))
