"""A fine-tuned model's pool and its base's share the replica's slots (cluster/router.py, endpoint.py): together
they never take more than the replica runs at once, and a freed slot goes to either pool's waiters in turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from yun.cluster import ReplicaSpec, Route, Router
from yun.cluster.load import Load, gateway_load
from yun.store.replicas import RegistryEntry

BASE = ReplicaSpec(model_id="m", kind="chat", path="/models/m.gguf")
TUNED = ReplicaSpec(model_id="ft:m:org-b::ftjob-1", kind="chat", path="/models/m.gguf")


def _entry(replica_id: str) -> RegistryEntry:
    now = datetime.now(UTC)
    return RegistryEntry(
        replica_id,
        "d",
        1,
        "local",
        "cpu1",
        "n",
        f"http://127.0.0.1:9/{replica_id}",  # never called: the test only leases it
        "ready",
        None,
        0,
        now,
        now,
        None,
        now,
        secret="s",
        adapters=("/adapters/ftjob-1.gguf",),
    )


def _routes(*entries: RegistryEntry, slots: int = 1) -> list[Route]:
    base = Route("d", BASE, entries=entries, slots=slots)
    tuned = replace(
        base, deployment_id="d/ft", spec=TUNED, owner_org="org-b", adapter="/adapters/ftjob-1.gguf", load_id="d"
    )
    return [base, tuned]


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    r = Router(queue_timeout_s=5.0)
    yield r
    await r.close()


class _Runner:
    """Requests that hold their slot until released, recording the order in which they got one."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.order: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, model: str, org: str, name: str) -> None:
        self.release[name] = asyncio.Event()

        async def run() -> None:
            async with self.router.get(model, org).lease(org):
                self.order.append(name)
                await self.release[name].wait()

        self.tasks[name] = asyncio.create_task(run())

    async def finish(self, name: str) -> None:
        self.release[name].set()
        await self.tasks[name]
        await _settle()

    async def finish_all(self) -> None:
        for release in self.release.values():
            release.set()
        await asyncio.gather(*self.tasks.values())


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_fine_tune_waits_while_its_base_holds_the_replicas_only_slot(router: Router) -> None:
    router.apply(_routes(_entry("r1"), slots=1))
    run = _Runner(router)
    run.start("m", "org-a", "base")
    await _settle()
    run.start(TUNED.model_id, "org-b", "tuned")
    await _settle()
    assert run.order == ["base"], "the fine-tune runs on the same llama.cpp slots: it waits for the base's to end"
    tuned_pool = router.get(TUNED.model_id, "org-b")
    assert len(tuned_pool.queue) == 1
    assert gateway_load(router) == {"d": Load(queued=1, in_flight=1)}
    await run.finish("base")
    assert run.order == ["base", "tuned"], "the slot the base freed goes to the fine-tune's waiter"
    await run.finish_all()
    assert all(r.shared.busy == 0 and r.outstanding == 0 for p in router.pools() for r in p.replicas)


async def test_freed_slots_alternate_between_the_base_and_its_fine_tune(router: Router) -> None:
    router.apply(_routes(_entry("r1"), slots=1))
    run = _Runner(router)
    run.start("m", "org-a", "a0")
    await _settle()
    for i in range(1, 4):  # the base's burst queues first...
        run.start("m", "org-a", f"a{i}")
    await _settle()
    for i in range(3):  # ...and the fine-tune's after it
        run.start(TUNED.model_id, "org-b", f"b{i}")
    await _settle()
    for name in ("a0", "b0", "a1", "b1", "a2"):
        await run.finish(name)
    assert run.order == ["a0", "b0", "a1", "b1", "a2", "b2"], "neither pool starves the other"
    await run.finish_all()


async def test_a_new_base_request_does_not_jump_the_fine_tunes_queue(router: Router) -> None:
    router.apply(_routes(_entry("r1"), slots=2))
    run = _Runner(router)
    run.start("m", "org-a", "a0")
    run.start("m", "org-a", "a1")
    await _settle()
    run.start(TUNED.model_id, "org-b", "b0")
    await _settle()
    await run.finish("a0")
    assert run.order == ["a0", "a1", "b0"]
    run.start("m", "org-a", "a2")  # the only slot is taken: it waits, and no third request runs
    await _settle()
    assert run.order == ["a0", "a1", "b0"]
    assert sum(r.shared.busy for r in router.get("m").replicas) == 2
    await run.finish("a1")
    assert run.order == ["a0", "a1", "b0", "a2"]
    await run.finish_all()


async def test_least_busy_replica_counts_both_pools(router: Router) -> None:
    """With two replicas, a fine-tune request goes to the one the base is not using."""
    router.apply(_routes(_entry("r1"), _entry("r2"), slots=1))
    run = _Runner(router)
    run.start("m", "org-a", "a0")
    await _settle()
    run.start(TUNED.model_id, "org-b", "b0")
    await _settle()
    assert run.order == ["a0", "b0"]
    busy = {r.replica_id: r.shared.busy for r in router.get("m").replicas}
    assert busy == {"r1": 1, "r2": 1}
    await run.finish_all()


async def test_a_replica_leaving_and_coming_back_keeps_its_running_requests_count(router: Router) -> None:
    router.apply(_routes(_entry("r1"), slots=1))
    run = _Runner(router)
    run.start("m", "org-a", "a0")
    await _settle()
    router.apply(_routes(slots=1))  # out of rotation for a moment (a restart seen by the registry)...
    router.apply(_routes(_entry("r1"), slots=1))  # ...and back while a0 still runs there
    run.start(TUNED.model_id, "org-b", "b0")
    await _settle()
    assert run.order == ["a0"], "the replica's one slot is still a0's"
    await run.finish("a0")
    assert run.order == ["a0", "b0"]
    await run.finish_all()
