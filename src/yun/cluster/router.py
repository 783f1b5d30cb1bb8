"""The gateway's side of the cluster: which replicas serve a model, and which one takes the next request.

Replicas come from the registry the controller writes (see `cluster/controller.py`); external
upstreams come from the catalog. A `Pool` is one deployment's replicas as this gateway sees them, with
its fair queue; the `Router` keeps one pool per deployment, in step with the registry, and picks a
request's pool: the caller's organization's dedicated deployment of the model if it has one, else the
shared one. A dedicated deployment serves only its owner.

Slots are per replica: a fine-tuned model's pool routes to its base's replicas (the same llama.cpp
server, with the adapter turned on per request), so its endpoints and the base's share one `Slots` count
per replica, and a slot freed by either pool is offered to the waiters of every pool that shares it, one
pool after another (see `Pool.dispatch`). Without that, base and fine-tune requests together would take
more than the replica's slots, and the rest would queue inside llama.cpp, outside the fair queue.

Cold start: a deployment at zero replicas (scaled to zero, and woken by demand) or with only starting ones
is `starting`: a request for it waits in its queue, up to `cold_start_timeout_s`, instead of being refused,
and the queued count, published to the controller (cluster/load.py), is what makes it scale up. One with
replicas that are not ready (a restart), or that failed to start (its record says why and it backs off), or
that was scaled to zero by hand or for want of credit refuses at once: nothing is on its way.

Touched only from the event loop, so no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from yun.cluster.endpoint import Endpoint, Slots
from yun.cluster.fair import FairQueue
from yun.cluster.share import Tenants
from yun.cluster.spec import ReplicaSpec
from yun.engines import Engine, OpenAIHTTPEngine
from yun.errors import ClientDisconnected, EngineUnavailable, ModelNotFound
from yun.store.replicas import RegistryEntry

__all__ = ["ClientGone", "Endpoint", "Pool", "Route", "Router", "Slots"]

ClientGone = Callable[[], Awaitable[None]]
"""Returns (or its awaitable completes) once the client of a request has disconnected."""

log = logging.getLogger("yun.cluster")


class Pool:
    """The replicas of one deployment (or one external upstream), and the requests waiting for one of
    their slots."""

    def __init__(
        self,
        spec: ReplicaSpec,
        replicas: list[Endpoint],
        queue_timeout_s: float = 300.0,
        *,
        deployment_id: str = "",
        owner_org: str | None = None,
        cold_start_timeout_s: float = 120.0,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.deployment_id = deployment_id or spec.model_id
        self.load_id = self.deployment_id
        """The deployment its load counts toward (a fine-tuned model's pool: its base's)."""
        self.owner_org = owner_org
        """None: shared by every organization; else the only one it serves."""
        self.replicas = replicas
        self.queue_timeout_s = queue_timeout_s
        self.cold_start_timeout_s = cold_start_timeout_s
        self.queue: FairQueue[Endpoint] = FairQueue()
        self.starting = False
        """No replica is ready and one is on its way (placed, or about to be for the requests waiting):
        requests wait for it rather than being refused."""
        self.failure = ""
        """Why it is not running (its record's message): failed starts, no credit. Empty: nothing stops it."""
        self.scaled_to_zero = False
        """Zero replicas by an operator's choice, with no autoscaling to wake it."""
        self.llamacpp = not spec.external
        """Its engines take llama.cpp's request extensions (`top_k`, `grammar`, ...); an external
        upstream or a vLLM deployment does not."""
        self._notify = notify or (lambda: None)
        self.tenants = Tenants()
        """Who holds slots here, who was active lately, and which slot each may take (cluster/share.py)."""
        self.siblings: tuple[Pool, ...] = ()
        """The other pools on the same replicas (a base deployment's and its fine-tunes'): they share its
        slots, and its waiters take turns with theirs. Empty for most pools."""
        self._granted_at = 0
        """When this pool last gave a freed slot to one of its waiters (monotonic ns): of the pools sharing
        replicas, the one served least recently gets the next freed slot."""

    def _check_ready(self) -> None:
        """Raises at once if no replica is healthy and none is starting (nothing to wait for)."""
        for r in self.replicas:
            if r.healthy and r.engine is not None:
                return
        if not self.starting:
            raise self.unavailable()

    def unavailable(self) -> EngineUnavailable:
        """Why a request is refused at once: no replica can take it and none is on its way."""
        model = self.spec.model_id
        if self.failure and self.owner_org is not None:  # its owner's own deployment: tell them why
            return EngineUnavailable(f"the model {model!r} is not running: {self.failure}")
        if self.failure:  # a shared one: why is the operator's business (engine logs, paths)
            return EngineUnavailable(f"the model {model!r} failed to start; Yun retries it after a pause: retry later")
        if self.scaled_to_zero:
            return EngineUnavailable(f"the model {model!r} is scaled to zero replicas; retry once it is scaled up")
        return EngineUnavailable(f"no healthy replica of {model!r} right now; retry shortly")

    @contextlib.asynccontextmanager
    async def lease(
        self, tenant: str = "", client_gone: ClientGone | None = None, cost: int = 1
    ) -> AsyncIterator[Engine]:
        """Borrow a replica slot for one request: at once if one is free and nobody waits, else in the
        tenant's turn (see fair.py), on the replica cluster/share.py chooses. `client_gone` returns when
        the client disconnects: a request still waiting then leaves the queue (ClientDisconnected) instead
        of running for nobody."""
        self._check_ready()
        self.tenants.saw(tenant)
        replica = None if len(self.queue) or self._siblings_wait() else self.tenants.slot_for(tenant, self.replicas)
        if replica is None:
            replica = await self._wait(tenant, client_gone, cost)
        else:
            self.tenants.took(tenant, replica)
            if self.siblings:
                self._granted_at = time.monotonic_ns()
        try:
            assert replica.engine is not None
            yield replica.engine
        finally:
            self.tenants.gave_back(tenant, replica)
            self.tenants.saw(tenant)  # its window runs from its last request's end
            if replica.retired:
                replica.release()
            self.dispatch()

    def _siblings_wait(self) -> bool:
        """A pool sharing these replicas has requests waiting: a new request here does not jump them."""
        for other in self.siblings:
            if len(other.queue):
                return True
        return False

    async def _wait(self, tenant: str, client_gone: ClientGone | None, cost: int) -> Endpoint:
        future = self.queue.push(tenant, cost)
        cold = self.starting
        if cold:
            self._notify()  # its queued count is what wakes a deployment at zero: publish it now
        timeout_s = self.cold_start_timeout_s if cold else self.queue_timeout_s
        self.dispatch()  # a slot may be free already (the queue was not empty only because of us)
        # Only a request that really waits watches its client: the hot path pays nothing for this.
        watcher = None if client_gone is None or future.done() else asyncio.ensure_future(client_gone())
        try:
            async with asyncio.timeout(timeout_s):
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
                self.tenants.gave_back(tenant, future.result())
                self.dispatch()
            if isinstance(exc, TimeoutError):
                if self.starting:
                    raise EngineUnavailable(
                        f"the model {self.spec.model_id!r} is starting (no replica was running) and was not ready "
                        f"within {timeout_s:g}s; retry in a moment"
                    ) from None
                raise EngineUnavailable(
                    f"every replica of {self.spec.model_id!r} stayed busy for {timeout_s:g}s; retry later"
                ) from None
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    def failed_before_output(self, engine: Engine) -> bool:
        """The replica behind `engine` refused a request with nothing computed (no connection, a 503): keep it
        out of this gateway's rotation for a moment (the controller sees to it), and say whether another
        healthy replica can take the request instead. Callers retry only then, invisibly to the client."""
        for endpoint in self.replicas:
            if endpoint.engine is engine:
                endpoint.suspect()
        self.dispatch()
        return any(r.healthy and r.engine is not None for r in self.replicas)

    def dispatch(self) -> None:
        """Give free slots to waiting requests, one tenant after another; with pools sharing these
        replicas (siblings), one slot at a time to the pool served least recently that has a waiter who may
        take it, so a busy fine-tune cannot starve its base of the slots they share, nor the other way."""
        if not self.siblings:
            while self._grant_one():
                pass
            return
        pools = [self, *self.siblings]
        while True:
            pools.sort(key=_least_recently_granted)
            for pool in pools:
                if pool._grant_one():
                    break
            else:
                return

    def _grant_one(self) -> bool:
        """Give one free slot of this pool's replicas to its waiter whose turn it is; False if none could
        be given (nobody waits, no slot is free, or nobody waiting may take it)."""
        if not len(self.queue):
            return False
        # None healthy: the waiters wait for the supervisor to bring one back (or time out).
        granted = self.queue.grant_to(lambda tenant: self.tenants.slot_for(tenant, self.replicas))
        if granted is None:
            return False
        tenant, replica = granted
        # On behalf of the waiter, so the slot is not given twice.
        self.tenants.took(tenant, replica)
        if self.siblings:
            self._granted_at = time.monotonic_ns()
        return True

    def close(self) -> None:
        self.queue.fail_all(EngineUnavailable(f"the model {self.spec.model_id!r} was removed"))


def _least_recently_granted(pool: Pool) -> int:
    return pool._granted_at


_LOCAL_CONNECTIONS = 64
_FAILURES_TO_UNHEALTHY = 3


@dataclass(frozen=True)
class Route:
    """One deployment as gateways should route to it: what it serves, for whom, on which replicas."""

    deployment_id: str
    spec: ReplicaSpec
    owner_org: str | None = None
    entries: tuple[RegistryEntry, ...] = ()
    """Its replicas from the registry (none for an external upstream: `spec.url` is the endpoint)."""
    slots: int | None = None
    llamacpp: bool = True
    desired: int = 1
    """Replicas the deployment asks for (0: scaled to zero)."""
    wakes: bool = False
    """It autoscales (a policy or an idle timeout): at zero, a request that waits starts a replica."""
    failure: str = ""
    """Why it is not running, from its record (its replicas failed to start and the controller backs off;
    its owner has no credit for it); empty when nothing stops it."""
    adapter: str | None = None
    """A fine-tuned model on its base's replicas: the LoRA adapter file each request turns on (at its
    position in what each replica loaded; every other adapter at scale 0)."""
    load_id: str | None = None
    """The deployment its load counts toward (autoscaling); None: its own. A fine-tuned model's is its
    base deployment's: the same replicas serve both."""


class Router:
    """One pool per deployment, kept in step with the registry by `apply`."""

    def __init__(
        self, *, request_timeout_s: float = 600.0, queue_timeout_s: float = 300.0, cold_start_timeout_s: float = 120.0
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self.cold_start_timeout_s = cold_start_timeout_s
        self.load_moved = asyncio.Event()
        """Set when a request starts waiting for a deployment at zero (the load publisher writes at once)."""
        self._pools: dict[str, Pool] = {}
        self._slots: dict[tuple[str, str], Slots] = {}
        """Each replica's slots (by replica id and address), shared by the pools that route to it."""
        self._by_model: dict[str, list[Pool]] = {}
        self._weights: dict[str, float] = {}

    def set_weights(self, weights: dict[str, float]) -> None:
        """Organizations' weights in every pool's fair queue (absent: 1)."""
        self._weights = weights
        for pool in self._pools.values():
            pool.queue.set_weights(weights)

    def pools(self) -> Iterable[Pool]:
        return self._pools.values()

    def get(self, model_id: str, org_id: str | None = None) -> Pool:
        """The pool that serves `model_id` to `org_id`: its own dedicated deployment first, else the shared
        one. Deployments dedicated to other organizations do not exist for it (404, like an unknown model)."""
        shared = None
        for pool in self._by_model.get(model_id, ()):
            if pool.owner_org is None:
                shared = shared or pool
            elif org_id is not None and pool.owner_org == org_id:
                return pool
        if shared is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
        return shared

    def apply(self, routes: Sequence[Route]) -> None:
        """Make the pools match `routes`: new deployments get a pool, removed ones are closed (their waiters
        fail), and each pool's endpoints follow its registry entries. An endpoint that stays keeps its
        in-flight count; one that goes leaves rotation at once and closes after its last request."""
        wanted = {r.deployment_id: r for r in routes}
        for deployment_id in list(self._pools):
            if deployment_id not in wanted:
                gone = self._pools.pop(deployment_id)
                gone.close()
                for endpoint in gone.replicas:
                    endpoint.retire()
        for route in routes:
            pool = self._pools.get(route.deployment_id)
            if pool is None:
                pool = Pool(
                    route.spec,
                    [],
                    self.queue_timeout_s,
                    deployment_id=route.deployment_id,
                    owner_org=route.owner_org,
                    cold_start_timeout_s=self.cold_start_timeout_s,
                    notify=self.load_moved.set,
                )
                pool.queue.set_weights(self._weights)
                self._pools[route.deployment_id] = pool
            elif pool.spec != route.spec or pool.owner_org != route.owner_org:
                # What it serves changed (a catalog edit, a new context): the same pool, so requests queued
                # for it keep their place; requests in flight finish with the spec they started with.
                if route.spec.external and pool.spec != route.spec:  # a new address or key: a new client
                    for endpoint in pool.replicas:
                        endpoint.retire()
                    pool.replicas = []
                pool.spec, pool.owner_org = route.spec, route.owner_org
            pool.llamacpp = route.llamacpp and not route.spec.external
            pool.load_id = route.load_id or route.deployment_id
            self._sync_endpoints(pool, route)
        self._link_siblings()
        for pool in self._pools.values():
            pool.dispatch()  # a replica that became ready takes the requests waiting for one
        by_model: dict[str, list[Pool]] = {}
        for pool in self._pools.values():
            by_model.setdefault(pool.spec.model_id, []).append(pool)
        self._by_model = by_model

    def _link_siblings(self) -> None:
        """Tell each pool which others share its replicas, and forget the slots of replicas no pool routes
        to any more once nothing runs on them (a request still running there keeps its count, in case the
        replica comes back into rotation before it ends)."""
        on: dict[int, list[Pool]] = {}
        used: set[int] = set()
        for pool in self._pools.values():
            for endpoint in pool.replicas:
                on.setdefault(id(endpoint.shared), []).append(pool)
        for pool in self._pools.values():
            siblings: dict[int, Pool] = {}
            for endpoint in pool.replicas:
                used.add(id(endpoint.shared))
                for other in on[id(endpoint.shared)]:
                    if other is not pool:
                        siblings[id(other)] = other
            pool.siblings = tuple(siblings.values())
        for key, slots in list(self._slots.items()):
            if id(slots) not in used and slots.busy == 0:
                del self._slots[key]

    def _sync_endpoints(self, pool: Pool, route: Route) -> None:
        if route.spec.external:
            if not pool.replicas:
                assert route.spec.url is not None
                engine = OpenAIHTTPEngine(
                    route.spec.model_id,
                    route.spec.url,
                    api_key=route.spec.api_key,
                    timeout_s=self.request_timeout_s,
                )
                pool.replicas = [Endpoint(f"{route.spec.model_id}/0", engine, None, state="starting")]
            return
        current = {(e.replica_id, e.address): e for e in pool.replicas}
        kept: list[Endpoint] = []
        for entry in route.entries:
            if entry.endpoint is None or entry.state not in ("ready", "restarting"):
                continue
            endpoint = current.pop((entry.id, entry.endpoint), None)
            if endpoint is None:
                name = f"{route.deployment_id}/{entry.id}"
                endpoint = Endpoint(
                    name,
                    self._engine(name, entry, route.llamacpp, route.adapter),
                    route.slots,
                    replica_id=entry.id,
                    address=entry.endpoint,
                    node=entry.node,
                    state=entry.state,
                    restarts=entry.restarts,
                    shared=self._slots.setdefault((entry.id, entry.endpoint), Slots()),
                )
            endpoint.state = entry.state
            endpoint.restarts = entry.restarts
            endpoint.healthy = entry.state == "ready" and time.monotonic() >= endpoint.suspect_until
            kept.append(endpoint)
        for gone in current.values():
            gone.retire()
        pool.replicas = kept
        was_starting = pool.starting
        pool.failure = route.failure
        pool.scaled_to_zero = route.desired == 0 and not route.wakes
        serving = any(e.endpoint is not None and e.state in ("ready", "restarting") for e in route.entries)
        pool.starting = not serving and not route.failure and (route.desired > 0 or route.wakes)
        if was_starting and not pool.starting and not kept:
            # The start it waited for is off (it failed, or the deployment was scaled to zero by hand).
            pool.queue.fail_all(pool.unavailable())

    def _engine(self, name: str, entry: RegistryEntry, llamacpp: bool, adapter: str | None = None) -> Engine:
        assert entry.endpoint is not None
        lora = None
        if adapter is not None:
            on = entry.adapters.index(adapter)
            lora = tuple((i, 1.0 if i == on else 0.0) for i in range(len(entry.adapters)))
        return OpenAIHTTPEngine(
            name,
            entry.endpoint,
            llamacpp=llamacpp,
            lora=lora,
            api_key=entry.secret or None,
            timeout_s=self.request_timeout_s,
            max_connections=_LOCAL_CONNECTIONS,  # the rest wait in the gateway, below the engine's HTTP threads
            # No idle keep-alive connections to llama.cpp: its HTTP server polls each one every 10 ms
            # (strace: ~96 polls/s per idle connection), and each wake-up takes a core from its compute
            # threads on a 2-core machine. A connect per request costs far less than a generation.
            keep_alive=not llamacpp,
        )

    async def check_external(self, *, new_only: bool = False) -> None:
        """Probe external upstreams (the controller watches replicas; nobody else watches these); with
        `new_only`, only those never probed yet (so a model just added is usable at once)."""
        for pool in list(self._pools.values()):
            if not pool.spec.external:
                continue
            for endpoint in pool.replicas:
                if endpoint.engine is None or (new_only and endpoint.state != "starting"):
                    continue
                if await endpoint.engine.healthy():
                    endpoint.failures = 0
                    endpoint.healthy = True
                else:
                    # One slow probe is not an outage: only consecutive failures take it out of rotation.
                    endpoint.failures += 1
                    if endpoint.failures >= _FAILURES_TO_UNHEALTHY or endpoint.state == "starting":
                        endpoint.healthy = False
                endpoint.state = "ready" if endpoint.healthy else "unreachable"
            pool.dispatch()

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
            for endpoint in pool.replicas:
                endpoint.outstanding = endpoint.shared.busy = 0
                endpoint.shared.tenants.clear()
                endpoint.retire()
        self._pools.clear()
        self._slots.clear()
        self._by_model.clear()
        await asyncio.sleep(0)  # let the engine clients' close tasks run
