"""The Ray actor that is one replica: it runs on the node Ray placed it on, and keeps its engine there.

Its constructor starts the engine (in the background, on the actor's event loop), so when Ray restarts
the actor, because its process or its whole node died, the engine comes back by itself, possibly on
another node with another address; the driver learns the new endpoint from `status()`. The engine is a
child of the actor's event-loop thread with PR_SET_PDEATHSIG, so it dies with the actor.

Ray imports this module on every node: Yun must be installed there (same version) for the actor to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import time
from collections import deque
from pathlib import Path

import ray

from yun.cluster.backends.supervised import RestartPolicy, SupervisedReplica
from yun.cluster.base import ClusterEvent, ReplicaOrder, ReplicaStatus
from yun.errors import EngineUnavailable

__all__ = ["ReplicaActor", "with_adapters_here"]

_EVENTS_KEPT = 200


def _ray_restarts() -> int:
    """How many times Ray restarted this actor. Ray has no public API for the count (plain `ray` has no
    state API, which needs the dashboard); this reads the GCS actor table as `ray.get_runtime_context()
    .was_current_actor_reconstructed` itself does, in the pinned Ray version."""
    from ray._private.state import actors

    try:
        info = actors(actor_id=ray.get_runtime_context().get_actor_id())
    except Exception:  # noqa: BLE001 - a count for operators must never keep the replica from starting
        return 0
    return int(info.get("NumRestarts", 0)) if info else 0


def with_adapters_here(order: ReplicaOrder, adapters: dict[str, bytes], directory: Path) -> ReplicaOrder:
    """The order with each LoRA adapter at a path of this node: kept where the node has it (a disk shared
    with the controller), else written from the bytes the driver shipped into `directory`, named by their
    content (the same adapter is written once per node, whatever replica brings it)."""
    paths: list[str] = []
    for path in order.args.lora:
        data = adapters.get(path)
        if Path(path).is_file() or data is None:
            paths.append(path)  # here already; or not shipped, and the engine's start names it missing
            continue
        target = directory / f"{hashlib.sha256(data).hexdigest()[:32]}.gguf"
        if not target.is_file():
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = target.with_suffix(f".{os.getpid()}.part")
            partial.write_bytes(data)
            partial.replace(target)
        paths.append(str(target))
    return dataclasses.replace(order, args=dataclasses.replace(order.args, lora=tuple(paths)))


class ReplicaActor:
    """One replica on one Ray node (an async actor: every method runs on one event loop)."""

    def __init__(
        self, order: ReplicaOrder, log_dir: str | None, policy: RestartPolicy, adapters: dict[str, bytes] | None = None
    ) -> None:
        context = ray.get_runtime_context()
        node = context.get_node_id()
        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        logs = Path(log_dir) if log_dir else Path(context.get_temp_dir()) / "yun-replicas"
        order = with_adapters_here(order, adapters or {}, Path(context.get_temp_dir()) / "yun-adapters")
        restarts = _ray_restarts()
        self._replica_id = order.replica_id
        self._events: deque[ClusterEvent] = deque(maxlen=_EVENTS_KEPT)
        self._replica = SupervisedReplica(
            order, host=host, node=node, log_dir=logs, policy=policy, on_event=self._record, restarts=restarts
        )
        if restarts:
            self._record("restarted", f"Ray restarted the replica's actor, on node {node} ({host})")
        # The constructor runs on the actor's event loop thread: start now, not when someone first asks.
        self._starting = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        with contextlib.suppress(EngineUnavailable):  # the replica is `failed` with the reason
            await self._replica.start()

    async def ready(self) -> ReplicaStatus:
        """The status once the first start of this actor's engine has ended (ready or failed)."""
        await asyncio.shield(self._starting)
        return self._replica.status()

    async def status(self, since: float) -> tuple[ReplicaStatus, list[ClusterEvent]]:
        """The status now, and the events after `since` (Unix time)."""
        return self._replica.status(), [event for event in self._events if event.at > since]

    async def stop(self) -> None:
        """Stop the engine (the driver then kills the actor)."""
        self._starting.cancel()
        await self._replica.stop()

    def _record(self, kind: str, message: str) -> None:
        self._events.append(ClusterEvent(at=time.time(), replica_id=self._replica_id, kind=kind, message=message))
