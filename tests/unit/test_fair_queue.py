"""Replica slots and the tenant-fair queue (cluster/fair.py): who gets a busy model's next free slot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from yun.cluster import Endpoint, Pool, ReplicaSpec
from yun.cluster.fair import QUANTUM
from yun.errors import ClientDisconnected, EngineUnavailable


class _Engine:
    """Stands in for a replica's engine: the queue never calls it, it only hands it out."""

    def __init__(self, name: str) -> None:
        self.name = name


def _deployment(tmp_path: Path, slots: int = 2, replicas: int = 1, queue_timeout_s: float = 30.0) -> Pool:
    spec = ReplicaSpec(model_id="m", kind="chat", path="/models/m.gguf", replicas=replicas)
    rs = [Endpoint(f"m/{i}", _Engine(f"m/{i}"), slots) for i in range(replicas)]  # type: ignore[arg-type]
    return Pool(spec, rs, queue_timeout_s)


class _Runner:
    """Requests that hold their slot until released, recording the order in which they got one."""

    def __init__(self, deployment: Pool) -> None:
        self.deployment = deployment
        self.order: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, tenant: str, name: str, cost: int = QUANTUM) -> None:
        """A request of `cost` tokens (default: one quantum, so equal requests take turns one by one)."""
        self.release[name] = asyncio.Event()

        async def run() -> str:
            async with self.deployment.lease(tenant, cost=cost) as engine:
                self.order.append(name)
                await self.release[name].wait()
                return engine.name

        self.tasks[name] = asyncio.create_task(run())

    async def finish(self, name: str) -> None:
        self.release[name].set()
        await self.tasks[name]

    async def finish_all(self) -> None:
        for release in self.release.values():
            release.set()
        await asyncio.gather(*self.tasks.values())


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_tenant_with_one_request_does_not_wait_behind_another_tenants_burst(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=2)
    run = _Runner(d)
    for i in range(8):
        run.start("flood", f"f{i}")
    await _settle()
    run.start("small", "s0")
    await _settle()
    assert run.order == ["f0", "f1"], "only as many requests run as the replica has slots"
    assert d.queue.waiting() == {"flood": 6, "small": 1}
    await run.finish("f0")
    await _settle()
    await run.finish("f1")
    await _settle()
    # The flood queued first, but the first freed slot goes to the small tenant: the flood holds one
    # already and may not take the last free one while another tenant asks (headroom), then its oldest.
    assert run.order[2:] == ["s0", "f2"]
    await run.finish_all()
    assert run.order[4:] == [f"f{i}" for i in range(3, 8)]
    assert len(d.queue) == 0 and d.replicas[0].outstanding == 0


async def test_slots_are_shared_by_tokens_not_requests(tmp_path: Path) -> None:
    """Deficit round-robin on token estimates: a tenant whose requests are 4x as long gets a quarter as
    many of them served while both wait, and a weight doubles a tenant's share."""
    d = _deployment(tmp_path, slots=1)
    run = _Runner(d)
    run.start("warm", "w")  # holds the one slot while the others queue
    for i in range(6):
        run.start("long", f"L{i}", cost=4 * QUANTUM)
    for i in range(12):
        run.start("short", f"S{i}", cost=QUANTUM)
    await _settle()
    while len(run.order) < 11:  # one slot: finishing the request that runs lets the next one in
        await run.finish(run.order[-1])
        await _settle()
    served = run.order[1:11]
    # Request round-robin would serve 5 and 5; by tokens the long tenant gets about one turn in five.
    assert sum(n.startswith("L") for n in served) <= 3 and sum(n.startswith("S") for n in served) >= 7
    await run.finish_all()

    d = _deployment(tmp_path, slots=1)
    d.queue.set_weights({"gold": 2.0})
    run = _Runner(d)
    run.start("warm", "w")
    for i in range(8):
        run.start("gold", f"G{i}")
        run.start("plain", f"P{i}")
    await _settle()
    while len(run.order) < 13:
        await run.finish(run.order[-1])
        await _settle()
    served = run.order[1:13]
    assert sum(n.startswith("G") for n in served) == 8 and sum(n.startswith("P") for n in served) == 4
    await run.finish_all()


async def test_round_robin_across_three_tenants_and_least_loaded_replica(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=1, replicas=2)
    run = _Runner(d)
    run.start("a", "a0")
    run.start("a", "a1")
    await _settle()
    assert {r.outstanding for r in d.replicas} == {1}, "the second request goes to the idle replica"
    for tenant, n in (("a", 3), ("b", 2), ("c", 1)):
        for i in range(n):
            run.start(tenant, f"{tenant}q{i}")
    await _settle()
    while len(run.order) < 8:  # finish the oldest running request, one after another
        await run.finish(next(n for n in run.order if not run.tasks[n].done()))
        await _settle()
    # a holds both slots when the others come: each of b and c is served before a gets another (a may
    # not take the last free slot while it holds one and others wait), then turns go round.
    assert run.order == ["a0", "a1", "bq0", "cq0", "aq0", "bq1", "aq1", "aq2"]
    await run.finish_all()


async def test_a_waiter_that_leaves_gives_its_turn_away_and_nothing_leaks(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=1)
    run = _Runner(d)
    run.start("a", "a0")
    run.start("b", "b0")
    run.start("c", "c0")
    await _settle()
    run.tasks["b0"].cancel()  # the client went away while queued
    await _settle()
    assert d.queue.waiting() == {"c": 1}
    await run.finish("a0")
    await _settle()
    assert run.order == ["a0", "c0"]
    await run.finish("c0")
    with pytest.raises(asyncio.CancelledError):
        await run.tasks["b0"]
    assert d.replicas[0].outstanding == 0 and len(d.queue) == 0


async def test_a_slot_granted_to_a_waiter_cancelled_in_the_same_turn_is_handed_on(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=1)
    run = _Runner(d)
    run.start("a", "a0")
    run.start("b", "b0")
    run.start("c", "c0")
    await _settle()
    run.release["a0"].set()
    await asyncio.sleep(0)  # a0 leaves its lease: b0 is granted the slot but has not run yet
    run.tasks["b0"].cancel()
    await _settle()
    assert run.order == ["a0", "c0"], "the slot b0 never used went to the next waiter"
    await run.finish("c0")
    assert d.replicas[0].outstanding == 0


async def test_waiting_too_long_is_a_503_and_removing_the_model_wakes_waiters(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=1, queue_timeout_s=0.05)
    run = _Runner(d)
    run.start("a", "a0")
    await _settle()
    with pytest.raises(EngineUnavailable, match="stayed busy"):
        async with d.lease("b"):
            pass
    d.queue_timeout_s = 30
    waiter = asyncio.ensure_future(d.lease("b").__aenter__())
    await _settle()
    d.close()
    with pytest.raises(EngineUnavailable, match="removed"):
        await waiter
    await run.finish("a0")
    assert d.replicas[0].outstanding == 0 and len(d.queue) == 0


async def test_no_healthy_replica_is_refused_at_once_and_external_servers_are_not_queued(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=1)
    d.replicas[0].healthy = False
    with pytest.raises(EngineUnavailable, match="no healthy replica"):
        async with d.lease("a"):
            pass
    spec = ReplicaSpec(model_id="ext", kind="chat", url="http://127.0.0.1:9")
    ext = Pool(spec, [Endpoint("ext/0", _Engine("ext/0"), None)])  # type: ignore[arg-type]
    run = _Runner(ext)
    for i in range(5):
        run.start("a", f"a{i}")
    await _settle()
    assert len(run.order) == 5 and len(ext.queue) == 0  # its capacity is the server's business
    await run.finish_all()


async def test_a_waiter_whose_client_disconnects_leaves_the_queue_and_never_runs(tmp_path: Path) -> None:
    d = _deployment(tmp_path, slots=1)
    run = _Runner(d)
    run.start("a", "a0")
    await _settle()
    gone = asyncio.Event()
    ran: list[str] = []

    async def queued(client: asyncio.Event) -> None:
        async with d.lease("b", client.wait):
            ran.append("b")

    waiter = asyncio.create_task(queued(gone))
    await _settle()
    assert d.queue.waiting() == {"b": 1}
    gone.set()  # the client hung up while its request waited
    with pytest.raises(ClientDisconnected):
        await waiter
    assert len(d.queue) == 0 and ran == []
    await run.finish("a0")
    assert d.replicas[0].outstanding == 0

    # A client that stays is served, and its watcher is cancelled once it has its slot.
    run.start("a", "a1")
    await _settle()
    waiter = asyncio.create_task(queued(asyncio.Event()))
    await _settle()
    await run.finish("a1")
    await waiter
    assert ran == ["b"] and d.replicas[0].outstanding == 0


async def test_beside_another_tenant_a_busy_tenant_leaves_one_slot_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headroom: alone, a tenant fills every slot; while another tenant is active it leaves the last one
    free, so the other's next request starts at once instead of waiting for a long generation to end."""
    d = _deployment(tmp_path, slots=4)
    run = _Runner(d)
    for i in range(6):
        run.start("busy", f"b{i}")
    await _settle()
    assert run.order == ["b0", "b1", "b2", "b3"], "alone, it uses every slot"
    run.start("quiet", "q0")
    await _settle()
    assert "q0" not in run.order, "every slot was taken before the quiet tenant came"
    await run.finish("b0")
    await _settle()
    assert run.order[4:] == ["q0"], "the freed slot goes to the quiet tenant"
    await run.finish("q0")
    await _settle()
    assert run.order[5:] == [], "the busy tenant does not take the last free slot while the quiet one is active"
    run.start("quiet", "q1")
    await _settle()
    assert run.order[5:] == ["q1"], "the quiet tenant's next request starts at once"
    await run.finish("q1")
    await _settle()

    # Once the quiet tenant has been gone for the window, the busy one takes every slot again.
    monkeypatch.setattr("yun.cluster.share.HEADROOM_WINDOW_S", 0.0)
    await run.finish("b1")
    await _settle()
    assert sorted(run.order[6:]) == ["b4", "b5"]
    assert d.replicas[0].outstanding == 4
    await run.finish_all()
    assert d.replicas[0].outstanding == 0 and d.tenants.held == {}


async def test_the_headroom_window_runs_from_the_end_of_a_long_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet tenant whose requests last longer than the window (a conversation on a slow model) finds a
    slot free for its next one: its window starts when its request ends, not when it began."""
    monkeypatch.setattr("yun.cluster.share.HEADROOM_WINDOW_S", 0.2)
    d = _deployment(tmp_path, slots=4)
    run = _Runner(d)
    for i in range(7):
        run.start("busy", f"b{i}")
    await _settle()
    run.start("quiet", "q0")
    await run.finish("b0")
    await _settle()
    assert run.order[4:] == ["q0"]
    await asyncio.sleep(0.3)  # q0 runs longer than the window
    await run.finish("b1")
    await _settle()
    assert run.order[5:] == ["b4"], "beside the quiet tenant's running request the busy one uses the others"
    await run.finish("q0")
    await _settle()
    assert run.order[6:] == [], "the slot q0 gave back stays free: the quiet tenant's window starts at its end"
    run.start("quiet", "q1")
    await _settle()
    assert run.order[6:] == ["q1"], "its next request starts at once"
    await run.finish("q1")
    await asyncio.sleep(0.3)  # gone quiet for longer than the window
    await run.finish("b2")
    await _settle()
    assert sorted(run.order[7:]) == ["b5", "b6"]
    await run.finish_all()
    assert d.replicas[0].outstanding == 0 and d.tenants.held == {}


def _tenants_on(d: Pool) -> list[dict[str, int]]:
    return [dict(r.shared.tenants) for r in d.replicas]


async def test_on_two_replicas_a_busy_tenant_keeps_to_one_while_another_is_active(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apart: on a CPU engine a request that shares a replica with a busy tenant's streams waits for their
    tokens at every step. With as many replicas as active tenants, each keeps to its own replicas; alone,
    a tenant uses them all."""
    d = _deployment(tmp_path, slots=4, replicas=2)
    run = _Runner(d)
    run.start("quiet", "q0")
    await _settle()
    await run.finish("q0")  # the quiet tenant was active a moment ago
    for i in range(10):
        run.start("busy", f"b{i}")
    await _settle()
    assert run.order[1:] == ["b0", "b1", "b2", "b3"], "the busy tenant fills one replica and leaves the other idle"
    assert sorted(r.shared.busy for r in d.replicas) == [0, 4]
    run.start("quiet", "q1")
    await _settle()
    assert run.order[5:] == ["q1"], "the quiet tenant's request starts at once, on the idle replica"
    assert {"quiet": 1} in _tenants_on(d) and {"busy": 4} in _tenants_on(d)
    run.start("quiet", "q2")  # a second request of the quiet tenant joins it there
    await _settle()
    assert run.order[6:] == ["q2"] and {"quiet": 2} in _tenants_on(d)
    await run.finish("b0")
    await _settle()
    assert run.order[7:] == ["b4"], "the busy tenant's next request takes the slot it freed on its own replica"
    assert {"quiet": 2} in _tenants_on(d), "never one beside the quiet tenant's, though two slots are free there"
    await run.finish("q1")
    await run.finish("q2")
    await _settle()
    assert run.order[8:] == [] and {} in _tenants_on(d), "the quiet tenant's replica stays free for its next request"
    run.start("quiet", "q3")
    await _settle()
    assert run.order[8:] == ["q3"]
    await run.finish("q3")

    # Once the quiet tenant has been gone for the window, the busy one takes every slot again.
    monkeypatch.setattr("yun.cluster.share.HEADROOM_WINDOW_S", 0.0)
    await run.finish("b1")
    await _settle()
    assert sorted(r.shared.busy for r in d.replicas) == [4, 4]
    await run.finish_all()
    assert [r.shared.busy for r in d.replicas] == [0, 0] and _tenants_on(d) == [{}, {}] and d.tenants.held == {}


async def test_with_more_active_tenants_than_replicas_they_share_and_each_gets_a_slot(tmp_path: Path) -> None:
    """Apart only while there is a replica per active tenant: three tenants on two replicas share them,
    and the one that holds none is never kept waiting by the rule (it takes a free slot, preferring a
    replica where no other tenant runs)."""
    d = _deployment(tmp_path, slots=4, replicas=2)
    run = _Runner(d)
    for tenant in ("a", "b"):
        run.start(tenant, f"{tenant}0")
    await _settle()
    assert sorted(map(str, _tenants_on(d))) == ["{'a': 1}", "{'b': 1}"], "two tenants, one replica each"
    run.start("c", "c0")
    await _settle()
    assert run.order[2:] == ["c0"], "a third tenant takes a free slot at once, beside one of them"
    for tenant in ("a", "b", "c"):
        for i in range(1, 4):
            run.start(tenant, f"{tenant}{i}")
    await _settle()
    # Three active tenants on two replicas share them: every slot is used (each tenant holds some, so none
    # needs the last one kept free) and the fair queue takes turns among them.
    assert sum(r.shared.busy for r in d.replicas) == 8
    assert sorted(d.tenants.held) == ["a", "b", "c"]
    await run.finish_all()
    assert d.tenants.held == {} and _tenants_on(d) == [{}, {}]
