"""A gateway's side of a cold start (cluster/router.py): a request for a deployment with no replica running
waits for one that is on its way, and is refused at once when none is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from yun.cluster import ReplicaSpec, Route, Router
from yun.cluster.load import Load, gateway_load
from yun.errors import ClientDisconnected, EngineUnavailable
from yun.store.replicas import RegistryEntry

SPEC = ReplicaSpec(model_id="m", kind="chat", path="/models/m.gguf")


def _entry(replica_id: str, state: str) -> RegistryEntry:
    now = datetime.now(UTC)
    endpoint = None if state == "starting" else "http://127.0.0.1:9"  # never called: the test only leases it
    return RegistryEntry(
        replica_id, "d", 1, "local", "cpu1", "n", endpoint, state, None, 0, now, None, None, now, secret="s"
    )


def _route(
    *entries: RegistryEntry, desired: int = 1, wakes: bool = True, failure: str = "", owner: str | None = None
) -> Route:
    return Route("d", SPEC, owner_org=owner, entries=entries, slots=1, desired=desired, wakes=wakes, failure=failure)


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    r = Router(cold_start_timeout_s=30.0)
    yield r
    await r.close()


async def _lease(router: Router, client_gone: asyncio.Event | None = None) -> str:
    pool = router.get("m")
    async with pool.lease("t", None if client_gone is None else client_gone.wait) as engine:
        return engine.name


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_for_a_deployment_at_zero_waits_for_the_replica_that_starts(router: Router) -> None:
    router.apply([_route(desired=0)])
    waiter = asyncio.create_task(_lease(router))
    await _settle()
    pool = router.get("m")
    assert not waiter.done() and len(pool.queue) == 1  # waiting, not refused
    assert router.load_moved.is_set()  # its queued count is published at once: that is what wakes it
    assert gateway_load(router) == {"d": Load(queued=1)}
    router.apply([_route(_entry("r1", "starting"))])  # the controller placed one: still loading
    await _settle()
    assert not waiter.done()
    router.apply([_route(_entry("r1", "ready"))])
    assert await waiter == "d/r1"
    assert pool.replicas[0].outstanding == 0 and len(pool.queue) == 0


async def test_a_cold_start_longer_than_the_timeout_is_a_503_that_says_the_model_is_starting() -> None:
    router = Router(cold_start_timeout_s=0.05)
    router.apply([_route(_entry("r1", "starting"))])
    with pytest.raises(EngineUnavailable, match="is starting .* retry in a moment"):
        await _lease(router)
    assert len(router.get("m").queue) == 0
    await router.close()


async def test_nothing_on_its_way_is_refused_at_once(router: Router) -> None:
    router.apply([_route(desired=0, wakes=False)])  # scaled to zero by hand, no autoscaling
    with pytest.raises(EngineUnavailable, match="scaled to zero"):
        await _lease(router)
    router.apply([_route(_entry("r1", "failed"), failure="replica failed: exit 1 /srv/x.log")])  # backing off
    with pytest.raises(EngineUnavailable, match="failed to start; Yun retries") as info:
        await _lease(router)
    assert "/srv" not in info.value.message  # a shared deployment's failure is the operator's to read
    why = "scaled to zero: no credit for its compute"
    router.apply([_route(desired=0, failure=why, owner="org-a")])  # a dedicated one its owner cannot pay for
    with pytest.raises(EngineUnavailable, match=f"is not running: {why}"):
        await router.get("m", "org-a").lease("org-a").__aenter__()
    router.apply([_route(_entry("r1", "restarting"))])  # a replica that exists but is not ready
    with pytest.raises(EngineUnavailable, match="no healthy replica"):
        await _lease(router)
    assert len(router.get("m").queue) == 0


async def test_waiters_are_told_at_once_when_the_start_they_wait_for_fails(router: Router) -> None:
    router.apply([_route(_entry("r1", "starting"))])
    waiter = asyncio.create_task(_lease(router))
    await _settle()
    assert not waiter.done()
    router.apply([_route(_entry("r1", "failed"), failure="replica failed")])
    with pytest.raises(EngineUnavailable, match="failed to start"):
        await waiter


async def test_a_waiting_client_that_disconnects_leaves_the_queue(router: Router) -> None:
    router.apply([_route(desired=0)])
    gone = asyncio.Event()
    waiter = asyncio.create_task(_lease(router, gone))
    await _settle()
    assert len(router.get("m").queue) == 1
    gone.set()
    with pytest.raises(ClientDisconnected):
        await waiter
    assert len(router.get("m").queue) == 0
    router.apply([_route(_entry("r1", "ready"))])  # the replica that comes up has nobody to serve
    assert router.get("m").replicas[0].outstanding == 0


async def test_a_fine_tuned_models_waiting_requests_count_toward_its_base_deployment(router: Router) -> None:
    """Its requests run on the base's replicas, so the base's autoscaler must see them (and its own pool's
    id, base/ft:..., is no deployment anyone scales)."""
    ft = ReplicaSpec(model_id="ft:m:org:x:job", kind="chat", path="/models/m.gguf")
    router.apply([_route(desired=0), Route("d/ft:m:org:x:job", ft, owner_org="org", slots=1, wakes=True, load_id="d")])
    waiters = [asyncio.create_task(_lease(router)), asyncio.create_task(_ft_lease(router))]
    await _settle()
    assert gateway_load(router) == {"d": Load(queued=2)}
    router.apply([])
    await asyncio.gather(*waiters, return_exceptions=True)


async def _ft_lease(router: Router) -> str:
    async with router.get("ft:m:org:x:job", "org").lease("t", None) as engine:
        return engine.name
