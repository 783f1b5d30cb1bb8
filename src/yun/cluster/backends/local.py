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
from yun.cluster.backends.tasks import LocalTasks
from yun.cluster.base import ClusterEvent, ReplicaOrder, ReplicaStatus

__all__ = ["LocalBackend"]

_HOST = "127.0.0.1"
_EVENTS_KEPT = 1000


class LocalBackend(LocalTasks):
    """Replicas as supervised child processes.

    - `log_dir`: one log file per replica (`<replica_id>.log`), appended to on every start.
    - `policy`: how engines that die or hang are restarted, and when a replica is `failed` instead
      (RestartPolicy in supervised.py).
    """

    name = "local"

    def __init__(
        self,
        log_dir: Path,
        *,
        policy: RestartPolicy | None = None,
    ) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.policy = policy or RestartPolicy()
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
        await super().close()

    def _record(self, replica_id: str, kind: str, message: str) -> None:
        self._events.append(ClusterEvent(at=time.time(), replica_id=replica_id, kind=kind, message=message))
