"""Autoscaling with real replica processes of the tiny model (the in-process app on SQLite, so the gateway
publishes its load in the database): scale to zero after the idle timeout, a cold start from zero that
serves the request which woke it, and a scale-up under queued load that goes back down after it.
Every wait is a bounded poll; nothing asserts a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import Harness
from tests.integration.test_replicas import MSG, _until
from tests.support.server import at_zero
from yun.api.lifespan import sync_deployments

pytestmark = pytest.mark.asyncio(loop_scope="session")
WAIT_S = 120.0  # bound on every wait below (a replica start on a busy 2-core machine); never a measured time


@contextlib.asynccontextmanager
async def _model(yun: Harness, tiny_model: Path, name: str) -> AsyncIterator[str]:
    """A catalog model of its own (the tiny model's file), deployed with one replica, removed afterwards."""
    yun.services.catalog.add_local(name, tiny_model, "chat", license="apache-2.0")
    await sync_deployments(yun.services)
    try:
        yield name
    finally:
        yun.services.catalog.remove(name)
        await sync_deployments(yun.services)


def _live(yun: Harness, deployment_id: str) -> list[str]:
    """The states of the replicas of `deployment_id` that hold compute (registry)."""
    return [e.state for e in yun.services.registry.of_deployment(deployment_id) if e.state not in ("failed", "stopped")]


def _desired(yun: Harness, deployment_id: str) -> int:
    d = yun.services.deployments.get(deployment_id)
    assert d is not None
    return d.desired_replicas


async def test_idle_deployment_scales_to_zero_and_a_request_cold_starts_it(yun: Harness, tiny_model: Path) -> None:
    async with _model(yun, tiny_model, "tiny-cold") as name:
        repo = yun.services.deployments
        repo.scale(name, min_replicas=0)
        repo.update(name, idle_timeout_s=2.0)
        await _until(lambda: _desired(yun, name) == 0 and _live(yun, name) == [], WAIT_S)
        health = (await yun.http.get("/health")).json()
        assert health["deployments"][name] | {"message": ""} == at_zero(name, dedicated=False)
        assert health["models"][name]["healthy_replicas"] == 0
        assert health["status"] == "ok"  # zero replicas is what it asked for

        # The request waits in the queue; its queued count wakes the deployment; the replica that cold
        # starts serves it.
        answer = await yun.client.chat.completions.create(model=name, messages=MSG, max_tokens=2)  # type: ignore[arg-type]
        assert answer.usage is not None and answer.usage.completion_tokens == 2
        assert _desired(yun, name) == 1 and _live(yun, name) == ["ready"]
        metrics = (await yun.http.get("/metrics")).text
        assert f'yun_deployment_desired_replicas{{deployment="{name}",model="{name}"}} 1.0' in metrics
        assert f'yun_deployment_ready_replicas{{deployment="{name}",model="{name}"}} 1.0' in metrics
        assert f'yun_deployment_queued{{deployment="{name}",model="{name}"}} ' in metrics  # as last published
        # Idle again, it goes back to zero.
        await _until(lambda: _desired(yun, name) == 0 and _live(yun, name) == [], WAIT_S)


async def test_autoscaler_scales_up_under_queued_load_and_back_down_after_it(yun: Harness, tiny_model: Path) -> None:
    async with _model(yun, tiny_model, "tiny-auto") as name:
        repo = yun.services.deployments
        repo.scale(name, max_replicas=2)
        # One request per replica wanted: the load of the workers below asks for two (the max).
        repo.update(name, autoscale={"target_in_flight": 1, "up_after_s": 0.5, "down_after_s": 2})
        assert _desired(yun, name) == 1
        stop = asyncio.Event()
        served = 0

        async def worker() -> None:
            nonlocal served
            while not stop.is_set():
                r = await yun.client.chat.completions.create(model=name, messages=MSG, max_tokens=64)  # type: ignore[arg-type]
                assert r.choices
                served += 1

        workers = [asyncio.create_task(worker()) for _ in range(6)]  # 2 slots busy, 4 queued
        try:
            await _until(lambda: _desired(yun, name) == 2 and _live(yun, name) == ["ready", "ready"], WAIT_S)
            pool = yun.services.router.get(name)
            await _until(lambda: sum(r.healthy for r in pool.replicas) == 2, WAIT_S)  # this gateway routes to both
            before = served
            await _until(lambda: served > before + 6, WAIT_S)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        # The load is gone: after the down window the count goes back to the floor, one replica drains away.
        await _until(lambda: _desired(yun, name) == 1 and _live(yun, name) == ["ready"], WAIT_S)
        answer = await yun.client.chat.completions.create(model=name, messages=MSG, max_tokens=2)  # type: ignore[arg-type]
        assert answer.choices
