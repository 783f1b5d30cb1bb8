"""Orders, probes and waits shared by the cluster tests."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

from tests.support import fake_engine
from tests.support.net import listener_pid
from yun.cluster.base import Cluster, EngineArgs, ReplicaOrder, ReplicaStatus, Resources

T = TypeVar("T")
MSG = [{"role": "user", "content": "hi"}]
HALF_CPU = Resources(cpus=0.5)
"""What a test replica asks for. The test nodes have one CPU each: two replicas fit one node (the one left
after the other is lost). Not zero: Ray places an actor that asks for nothing on a random node."""


def new_id() -> str:
    return uuid.uuid4().hex[:8]


def llama_order(model: Path, replica_id: str | None = None, deployment: str = "tiny") -> ReplicaOrder:
    return ReplicaOrder(
        replica_id=replica_id or new_id(),
        deployment_id=deployment,
        model_id="tiny",
        kind="chat",
        engine="llamacpp",
        model_path=str(model),
        secret=secrets.token_urlsafe(16),
        args=EngineArgs(threads=1, parallel=1, context=256),
        resources=HALF_CPU,
        start_timeout_s=60.0,
    )


def vllm_order(replica_id: str | None = None, command: tuple[str, ...] | None = fake_engine.command()) -> ReplicaOrder:
    return ReplicaOrder(
        replica_id=replica_id or new_id(),
        deployment_id="fake",
        model_id="fake",
        kind="chat",
        engine="vllm",
        model_path="fake/model",
        secret=secrets.token_urlsafe(16),
        resources=HALF_CPU,
        start_timeout_s=30.0,
        command=command,
    )


async def chat(endpoint: str, secret: str | None, model: str = "tiny") -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        return await client.post(
            endpoint + "/v1/chat/completions",
            json={"model": model, "messages": MSG, "max_tokens": 2},
            headers=headers,
        )


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    """Poll `probe` until it returns something (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await probe()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"not reached within {timeout:g}s: {what}"
        await asyncio.sleep(0.2)
    return found


async def status_of(backend: Cluster, replica_id: str) -> ReplicaStatus | None:
    return next((s for s in await backend.replicas() if s.replica_id == replica_id), None)


def engine_pid(endpoint: str) -> int:
    address = urlsplit(endpoint)
    assert address.hostname is not None and address.port is not None
    return listener_pid(address.hostname, address.port)


def engine_environment(endpoint: str) -> dict[str, str]:
    """The environment the engine answering at `endpoint` runs with."""
    raw = Path(f"/proc/{engine_pid(endpoint)}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def kill_engine(endpoint: str) -> None:
    os.kill(engine_pid(endpoint), signal.SIGKILL)


async def kill_and_await_restart(backend: Cluster, status: ReplicaStatus) -> ReplicaStatus:
    assert status.endpoint is not None
    kill_engine(status.endpoint)

    async def back() -> ReplicaStatus | None:
        now = await status_of(backend, status.replica_id)
        ok = now is not None and now.state == "ready" and now.restarts > status.restarts
        return now if ok else None

    return await until(back, "the killed engine is back")
