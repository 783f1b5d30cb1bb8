"""The `local` cluster backend: replicas are processes on this machine, supervised by the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from yun.cluster.fair import FairQueue
from yun.cluster.replica import Replica
from yun.cluster.spec import EngineTuning, ReplicaSpec
from yun.engines import Engine
from yun.errors import ClientDisconnected, EngineUnavailable, ModelNotFound

__all__ = ["ClientGone", "Deployment", "LocalCluster"]

ClientGone = Callable[[], Awaitable[None]]
"""Returns (or its awaitable completes) once the client of a request has disconnected."""

log = logging.getLogger("yun.cluster")


class Deployment:
    """All replicas of one model, and the requests waiting for one of their slots."""

    def __init__(self, spec: ReplicaSpec, replicas: list[Replica], queue_timeout_s: float = 300.0) -> None:
        self.spec = spec
        self.replicas = replicas
        self.queue_timeout_s = queue_timeout_s
        self.queue: FairQueue[Replica] = FairQueue()

    def _free_replica(self) -> Replica | None:
        """The healthy replica with the least work in flight, if it has a free slot; raises if none is healthy."""
        best: Replica | None = None
        for r in self.replicas:
            if r.healthy and r.engine is not None and (best is None or r.outstanding < best.outstanding):
                best = r
        if best is None:
            raise EngineUnavailable(f"no healthy replica of {self.spec.model_id!r} right now; retry shortly")
        return best if best.slots is None or best.outstanding < best.slots else None

    @contextlib.asynccontextmanager
    async def lease(self, tenant: str = "", client_gone: ClientGone | None = None) -> AsyncIterator[Engine]:
        """Borrow a replica slot for one request: at once if one is free and nobody waits, else in the
        tenant's turn (see fair.py). `client_gone` returns when the client disconnects: a request still
        waiting then leaves the queue (ClientDisconnected) instead of running for nobody."""
        replica = self._free_replica()  # raises at once when no replica is healthy: nothing to wait for
        if replica is None or len(self.queue):
            replica = await self._wait(tenant, client_gone)
        else:
            replica.outstanding += 1
        try:
            assert replica.engine is not None
            yield replica.engine
        finally:
            replica.outstanding -= 1
            self.dispatch()

    async def _wait(self, tenant: str, client_gone: ClientGone | None) -> Replica:
        future = self.queue.push(tenant)
        self.dispatch()  # a slot may be free already (the queue was not empty only because of us)
        # Only a request that really waits watches its client: the hot path pays nothing for this.
        watcher = None if client_gone is None or future.done() else asyncio.ensure_future(client_gone())
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                if watcher is None:
                    return await future
                await asyncio.wait((future, watcher), return_when=asyncio.FIRST_COMPLETED)
                if not future.done():
                    raise ClientDisconnected("the client closed the connection while the request waited")
                return future.result()
        except BaseException as exc:
            self.queue.discard(tenant, future)
            if future.done() and not future.cancelled() and future.exception() is None:
                # Granted a slot in the same moment the wait ended (client gone, timeout): hand it on.
                future.result().outstanding -= 1
                self.dispatch()
            if isinstance(exc, TimeoutError):
                raise EngineUnavailable(
                    f"every replica of {self.spec.model_id!r} stayed busy for {self.queue_timeout_s:g}s; retry later"
                ) from None
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    def dispatch(self) -> None:
        """Give free slots to waiting requests, one tenant after another."""
        while len(self.queue):
            try:
                replica = self._free_replica()
            except EngineUnavailable:
                return  # none healthy: they wait for the supervisor to bring one back (or time out)
            if replica is None:
                return
            replica.outstanding += 1  # on behalf of the waiter, so the slot is not given twice
            if not self.queue.grant(replica):
                replica.outstanding -= 1
                return

    def close(self) -> None:
        self.queue.fail_all(EngineUnavailable(f"the model {self.spec.model_id!r} was removed"))


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
        deployment = Deployment(spec, replicas, self.tuning.queue_timeout_s)
        self._deployments[spec.model_id] = deployment
        results = await asyncio.gather(*(r.start() for r in replicas), return_exceptions=True)
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, BaseException):
                log.error("replica %s failed to start: %s", replica.name, result)
        return deployment

    async def undeploy(self, model_id: str) -> None:
        deployment = self._deployments.pop(model_id, None)
        if deployment is not None:
            deployment.close()
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
                deployment.dispatch()  # a replica back in rotation takes the requests waiting for it

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for model_id in list(self._deployments):
            await self.undeploy(model_id)
