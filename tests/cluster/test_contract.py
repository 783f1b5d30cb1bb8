"""The `Cluster` contract, once per backend (`local` and `ray`), with real engine processes: the tiny
Qwen2 model in xllamacpp, and for the vLLM path a fake OpenAI-shaped engine (no GPU here)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.helpers import (
    chat,
    engine_pid,
    kill_and_await_restart,
    kill_engine,
    llama_order,
    status_of,
    until,
    vllm_order,
)
from tests.support import fake_engine
from yun.cluster.base import Cluster, ReplicaStatus
from yun.errors import EngineUnavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_placed_replica_serves_only_with_its_secret(backend: Cluster, tiny_model: Path) -> None:
    order = llama_order(tiny_model)
    status = await backend.place(order)
    assert status.state == "ready" and status.endpoint is not None
    assert (status.replica_id, status.deployment_id, status.restarts) == (order.replica_id, "tiny", 0)

    answer = await chat(status.endpoint, order.secret)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 2
    assert (await chat(status.endpoint, None)).status_code == 401
    assert (await chat(status.endpoint, "not-the-secret")).status_code == 401

    cmdline = Path(f"/proc/{engine_pid(status.endpoint)}/cmdline").read_bytes()
    assert b"xllamacpp_worker" in cmdline and order.secret.encode() not in cmdline
    assert [s.replica_id for s in await backend.replicas()] == [order.replica_id]
    kinds = [e.kind for e in backend.events() if e.replica_id == order.replica_id]
    assert "started" in kinds and "ready" in kinds


async def test_vllm_path_gives_the_secret_as_its_api_key(backend: Cluster) -> None:
    order = vllm_order()
    status = await backend.place(order)
    assert status.state == "ready" and status.endpoint is not None
    answer = await chat(status.endpoint, order.secret, model="fake/model")
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert (await chat(status.endpoint, None, model="fake/model")).status_code == 401


async def test_placing_the_same_id_twice_starts_nothing(backend: Cluster) -> None:
    order = vllm_order()
    first, second = await asyncio.gather(backend.place(order), backend.place(order))
    third = await backend.place(order)
    assert first.endpoint is not None and first.endpoint == second.endpoint == third.endpoint
    assert [s.replica_id for s in await backend.replicas()] == [order.replica_id]
    assert [e.kind for e in backend.events() if e.replica_id == order.replica_id].count("started") == 1


async def test_stop_frees_the_replica(backend: Cluster) -> None:
    order = vllm_order()
    status = await backend.place(order)
    assert status.endpoint is not None
    await backend.stop(order.replica_id)
    assert await status_of(backend, order.replica_id) is None
    with pytest.raises(httpx.ConnectError):
        await chat(status.endpoint, order.secret)
    await backend.stop(order.replica_id)  # unknown (already stopped) ids are ignored
    again = await backend.place(order)  # the id is free for a new replica
    assert again.state == "ready"


async def test_an_engine_that_cannot_start_fails_with_its_cause(backend: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    order = llama_order(missing)
    with pytest.raises(EngineUnavailable) as info:
        await backend.place(order)
    assert f"no model file at {missing}" in info.value.message and "exited with code 2" in info.value.message
    status = await status_of(backend, order.replica_id)
    assert status is not None and status.state == "failed" and status.endpoint is None
    assert status.error is not None and f"no model file at {missing}" in status.error
    assert "failed" in [e.kind for e in backend.events() if e.replica_id == order.replica_id]


async def test_a_command_that_would_show_the_secret_is_refused(backend: Cluster) -> None:
    order = vllm_order(command=(*fake_engine.command(), "--api-key", "{secret}"))
    with pytest.raises(EngineUnavailable) as info:
        await backend.place(order)
    assert "must not carry the secret" in info.value.message and order.secret not in info.value.message


async def test_a_killed_engine_comes_back(backend: Cluster, tiny_model: Path) -> None:
    order = llama_order(tiny_model)
    before = await backend.place(order)
    since = before_kill = max((e.at for e in backend.events()), default=0.0)
    after = await kill_and_await_restart(backend, before)
    assert after.restarts == 1 and after.endpoint is not None and after.endpoint != before.endpoint
    answer = await chat(after.endpoint, order.secret)
    assert answer.status_code == 200, answer.text
    kinds = [e.kind for e in backend.events(since) if e.replica_id == order.replica_id]
    assert "died" in kinds and "restarted" in kinds
    died = next(e for e in backend.events(before_kill) if e.kind == "died" and e.replica_id == order.replica_id)
    assert "killed by signal 9" in died.message


async def test_a_hung_engine_is_killed_and_restarted(hung_backend: Cluster, tiny_model: Path) -> None:
    """Alive but silent (SIGSTOP: a deadlock, a wedged device): past `hung_after_s` without answering its
    health check, it is killed and restarted like an engine that died, and serves again."""
    order = llama_order(tiny_model)
    before = await hung_backend.place(order)
    assert before.endpoint is not None
    since = max((e.at for e in hung_backend.events()), default=0.0)
    os.kill(engine_pid(before.endpoint), signal.SIGSTOP)

    async def back() -> ReplicaStatus | None:
        now = await status_of(hung_backend, order.replica_id)
        return now if now is not None and now.state == "ready" and now.restarts == 1 else None

    after = await until(back, "the hung engine is restarted")
    assert after.endpoint is not None and after.endpoint != before.endpoint
    assert (await chat(after.endpoint, order.secret)).status_code == 200
    died = [e for e in hung_backend.events(since) if e.kind == "died" and e.replica_id == order.replica_id]
    assert died and "stopped answering its health check" in died[0].message, died


async def test_a_replica_that_keeps_dying_is_failed(backend: Cluster) -> None:
    """The backends' `max_restarts` here is 2: the third death within the window is final."""
    status = await backend.place(vllm_order())
    for _ in range(2):
        status = await kill_and_await_restart(backend, status)
    assert status.endpoint is not None
    kill_engine(status.endpoint)

    async def failed() -> ReplicaStatus | None:
        now = await status_of(backend, status.replica_id)
        return now if now is not None and now.state == "failed" else None

    final = await until(failed, "the replica is failed")
    assert final.restarts == 2 and final.endpoint is None
    assert final.error is not None and "killed by signal 9" in final.error and "not restarted again" in final.error
    await asyncio.sleep(1.5)  # several supervision rounds: still failed, nothing started again
    later: Any = await status_of(backend, status.replica_id)
    assert later.state == "failed" and later.restarts == 2
