"""What only the `ray` backend does, on a real two-node Ray cluster: spread replicas over nodes, bring a
replica back on another node when its node is lost, and let a new controller adopt running replicas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.cluster.conftest import ray_backend_for
from tests.cluster.helpers import chat, engine_environment, engine_pid, llama_order, status_of, until, vllm_order
from tests.support.net import free_port
from tests.support.raycluster import HEAD_IP, WORKER_IP
from yun.cluster.base import Cluster, EngineArgs, ReplicaStatus
from yun.errors import EngineUnavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


def host(status: ReplicaStatus) -> str | None:
    return None if status.endpoint is None else urlsplit(status.endpoint).hostname


async def test_replicas_spread_over_nodes_and_survive_losing_one(ray_cluster: Any, tiny_model: Path) -> None:
    # Short questions to actors: one whose node is gone answers nothing until Ray restarted it.
    backend = ray_backend_for(ray_cluster, call_timeout_s=2.0)
    await backend.start()
    try:
        two_threads = EngineArgs(threads=2, parallel=1, context=256)
        orders = [replace(llama_order(tiny_model, deployment="spread"), args=two_threads) for _ in range(2)]
        placed = await asyncio.gather(*(backend.place(order) for order in orders))
        assert {host(s) for s in placed} == {HEAD_IP, WORKER_IP}
        assert len({s.node for s in placed}) == 2
        for order, status in zip(orders, placed, strict=True):
            assert status.endpoint is not None
            assert (await chat(status.endpoint, order.secret)).status_code == 200
            # Its own thread count for OpenMP, not the 1 that Ray gives the worker of a one-CPU actor.
            assert engine_environment(status.endpoint)["OMP_NUM_THREADS"] == "2"

        (lost,) = [s for s in placed if host(s) == WORKER_IP]
        secret = next(o.secret for o in orders if o.replica_id == lost.replica_id)
        ray_cluster.kill_worker_node()

        async def moved() -> ReplicaStatus | None:
            now = await status_of(backend, lost.replica_id)
            return now if now is not None and now.state == "ready" and host(now) == HEAD_IP else None

        back = await until(moved, "the lost node's replica answers on the head node")
        assert back.endpoint is not None and back.node != lost.node and back.restarts >= 1
        assert (await chat(back.endpoint, secret)).status_code == 200
        kinds = [e.kind for e in backend.events() if e.replica_id == lost.replica_id]
        assert "moved" in kinds
        # The other replica never noticed.
        (kept,) = [s for s in await backend.replicas() if s.replica_id != lost.replica_id]
        assert kept.endpoint == next(s.endpoint for s in placed if s.replica_id == kept.replica_id)
    finally:
        await backend.close(stop_replicas=True)
        ray_cluster.start_worker_node()  # the next tests get two nodes again


async def test_a_killed_actor_is_restarted_and_its_engine_dies_with_it(ray_backend: Cluster) -> None:
    order = vllm_order()
    before = await ray_backend.place(order)
    assert before.endpoint is not None
    engine = engine_pid(before.endpoint)
    actor = int(Path(f"/proc/{engine}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
    os.kill(actor, signal.SIGKILL)

    async def engine_gone() -> bool | None:
        return True if not Path(f"/proc/{engine}").exists() else None

    await until(engine_gone, "the engine died with its actor (PR_SET_PDEATHSIG)", timeout=10)

    async def back() -> ReplicaStatus | None:
        now = await status_of(ray_backend, order.replica_id)
        return now if now is not None and now.state == "ready" and now.endpoint != before.endpoint else None

    after = await until(back, "Ray restarted the actor and it started its engine again")
    assert after.restarts == 1 and after.endpoint is not None
    assert (await chat(after.endpoint, order.secret, model="fake/model")).status_code == 200


_DRIVER = """
import asyncio, json, sys
from dataclasses import asdict, replace
from yun.cluster.backends.ray import RayBackend
from yun.cluster.base import ReplicaOrder, Resources

async def main():
    given = json.load(sys.stdin)
    backend = RayBackend(given["address"], node_ip_address=given["ip"])
    await backend.start()
    adopted = [asdict(s) for s in await backend.replicas()]
    fields = {**given["order"], "resources": Resources(cpus=0.5), "command": tuple(given["order"]["command"])}
    order = ReplicaOrder(**fields)
    again = asdict(await backend.place(order))
    await backend.close(stop_replicas=False)
    print(json.dumps({"adopted": adopted, "again": again}))

asyncio.run(main())
"""


async def test_a_new_controller_adopts_running_replicas(ray_backend: Cluster, ray_cluster: Any) -> None:
    orders = [vllm_order() for _ in range(2)]
    placed = {s.replica_id: s for s in await asyncio.gather(*(ray_backend.place(o) for o in orders))}
    order = {k: v for k, v in asdict(orders[0]).items() if k not in ("args", "resources")}
    given = {"address": ray_cluster.address, "ip": HEAD_IP, "order": order}
    driver = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _DRIVER],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    seen = json.loads(driver.stdout.strip().splitlines()[-1])

    adopted = {s["replica_id"]: s for s in seen["adopted"]}
    assert adopted.keys() == placed.keys()
    assert {k: s["endpoint"] for k, s in adopted.items()} == {k: s.endpoint for k, s in placed.items()}
    assert all(s["state"] == "ready" for s in adopted.values())
    assert seen["again"]["endpoint"] == placed[orders[0].replica_id].endpoint  # started nothing new
    # The replicas outlived that controller, and none was duplicated.
    now = {s.replica_id: s.endpoint for s in await ray_backend.replicas()}
    assert now == {k: s.endpoint for k, s in placed.items()}
    for o in orders:
        endpoint = placed[o.replica_id].endpoint
        assert endpoint is not None
        assert (await chat(endpoint, o.secret, model="fake/model")).status_code == 200


async def test_an_address_without_ray_is_refused_at_once() -> None:
    from yun.cluster.backends.ray import RayBackend

    for address in (f"{HEAD_IP}:{free_port()}", "ray://127.0.0.2:10001", "nohost"):
        with pytest.raises(EngineUnavailable) as info:
            await RayBackend(address).start()
        assert address in info.value.message


_HALF_ANSWERING = """
import asyncio, sys
from yun.cluster.backends.ray import RayBackend
from yun.errors import EngineUnavailable
try:
    asyncio.run(RayBackend(sys.argv[1], node_ip_address="127.0.0.2", connect_timeout_s=3).start())
except EngineUnavailable as exc:
    print(exc.message)
"""


async def test_an_address_that_never_answers_like_ray_times_out() -> None:
    """Something accepts connections there but never speaks Ray's protocol: ray.init would wait forever.
    A subprocess, because the thread stuck in ray.init stays in its process."""
    with socket.socket() as listener:
        listener.bind((HEAD_IP, 0))
        listener.listen()
        address = f"{HEAD_IP}:{listener.getsockname()[1]}"
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _HALF_ANSWERING, address],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"no Ray cluster answered at {address} within 3s" in done.stdout
