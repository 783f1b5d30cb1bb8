"""The `local` cluster backend: replicas are processes on this machine, supervised by the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from yun.cluster.replica import Replica
from yun.cluster.spec import EngineTuning, ReplicaSpec
from yun.engines import Engine
from yun.errors import EngineUnavailable, ModelNotFound

__all__ = ["Deployment", "LocalCluster"]

log = logging.getLogger("yun.cluster")


class Deployment:
    """All replicas of one model."""

    def __init__(self, spec: ReplicaSpec, replicas: list[Replica]) -> None:
        self.spec = spec
        self.replicas = replicas

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Engine]:
        """Borrow the healthy replica with the least work in flight for one request."""
        candidates = [r for r in self.replicas if r.healthy and r.engine is not None]
        if not candidates:
            raise EngineUnavailable(f"no healthy replica of {self.spec.model_id!r} right now; retry shortly")
        replica = min(candidates, key=lambda r: r.outstanding)
        assert replica.engine is not None
        replica.outstanding += 1
        try:
            yield replica.engine
        finally:
            replica.outstanding -= 1


class LocalCluster:
    """Deploys models as replica processes and keeps them healthy."""

    def __init__(self, tuning: EngineTuning, log_dir: Path, health_interval_s: float = 2.0) -> None:
        self.tuning = tuning
        self.log_dir = log_dir
        self.health_interval_s = health_interval_s
        self._deployments: dict[str, Deployment] = {}
        self._supervisor: asyncio.Task[None] | None = None

    def deployments(self) -> Iterable[Deployment]:
        return self._deployments.values()

    def get(self, model_id: str) -> Deployment:
        try:
            return self._deployments[model_id]
        except KeyError:
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model") from None

    async def deploy(self, spec: ReplicaSpec) -> Deployment:
        """Start the replicas of `spec`; a model whose replicas fail to load is kept, unhealthy, and retried."""
        if spec.model_id in self._deployments:
            await self.undeploy(spec.model_id)
        replicas = [Replica(spec, i, self.tuning, self.log_dir) for i in range(max(1, spec.replicas))]
        deployment = Deployment(spec, replicas)
        self._deployments[spec.model_id] = deployment
        results = await asyncio.gather(*(r.start() for r in replicas), return_exceptions=True)
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, BaseException):
                log.error("replica %s failed to start: %s", replica.name, result)
        return deployment

    async def undeploy(self, model_id: str) -> None:
        deployment = self._deployments.pop(model_id, None)
        if deployment is not None:
            await asyncio.gather(*(r.stop() for r in deployment.replicas))

    def start_supervisor(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="yun-supervisor")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            for deployment in list(self._deployments.values()):
                for replica in deployment.replicas:
                    if replica.state != "loading":
                        await replica.check()

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for model_id in list(self._deployments):
            await self.undeploy(model_id)
