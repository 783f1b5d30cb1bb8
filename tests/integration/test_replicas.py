"""Replica supervision and the external-upstream seam, with real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.conftest import Harness
from tests.support.net import free_port
from yun.api.lifespan import sync_deployments
from yun.engines import OpenAIHTTPEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")
MSG = [{"role": "user", "content": "hi"}]


async def _until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def _engine_pid(address: str) -> int:
    """The engine process (a descendant of this test process) listening at `address`, from its command line."""
    port = address.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"yun.engines.xllamacpp_worker" in argv
            and b"--port" in argv
            and argv[argv.index(b"--port") + 1] == port.encode()
        ):
            return int(proc.name)
    raise AssertionError(f"no engine process listens at {address}")


def _refused(address: str) -> bool:
    host, port = address.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_a_killed_replica_is_restarted(yun: Harness) -> None:
    """The backend restarts a dead engine; the controller writes its new address to the registry and the
    gateway routes there within a second or so."""
    before = yun.services.router.get("tiny").replicas[0]
    os.kill(_engine_pid(before.address), signal.SIGKILL)

    def back() -> bool:
        now = yun.services.router.get("tiny").replicas
        return bool(now) and now[0].healthy and now[0].restarts > before.restarts

    await _until(back)
    # The engine demands its replica's secret: the registry's, which only the controller and gateways know.
    address = yun.services.router.get("tiny").replicas[0].address
    async with httpx.AsyncClient() as direct:
        refused = await direct.post(address + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 1})
    assert refused.status_code == 401
    r = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 2


async def test_no_healthy_replica_is_503_then_recovers(yun: Harness) -> None:
    replica = yun.services.router.get("tiny").replicas[0]
    replica.healthy = False  # what the supervisor sets when a probe fails
    with pytest.raises(openai.InternalServerError) as info:
        await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
    assert info.value.status_code == 503 and info.value.code == "engine_unavailable"
    await _until(lambda: replica.healthy, timeout=10)
    r = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
    assert r.choices


async def test_client_disconnect_stops_the_engine(yun: Harness) -> None:
    """Closing a stream early releases the replica (the engine request is cancelled, not left running)."""
    replica = yun.services.router.get("tiny").replicas[0]
    engine_url = replica.address
    entry = yun.services.registry.get(replica.replica_id)
    assert entry is not None
    async with openai.AsyncOpenAI(api_key=yun.key, base_url=yun.base_url + "/v1", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=MSG,
            max_tokens=3000,
            stream=True,  # type: ignore[arg-type]
        )
        got = 0
        async for _ in stream:
            got += 1
            if got == 3:
                break
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {entry.secret}"}) as probe:
            busy = (await probe.get(engine_url + "/slots")).json()
            assert any(s.get("is_processing") for s in busy), "the engine should still be generating"
            await stream.close()
            await _until(lambda: replica.outstanding == 0, timeout=10)
            for _ in range(100):
                slots = (await probe.get(engine_url + "/slots")).json()
                if not any(s.get("is_processing") for s in slots):
                    break
                await asyncio.sleep(0.1)
            assert not any(s.get("is_processing") for s in slots), "the engine kept generating for a gone client"
            assert all(s.get("n_decoded", 0) < 3000 for s in slots)
    text = (await yun.http.get("/metrics")).text
    assert 'status="aborted"' in text


@pytest.fixture(scope="module")
def upstream(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second, independent engine server (llama.cpp's OpenAI server), as vLLM or a provider would be."""
    port = free_port()
    log = (tmp_path_factory.mktemp("upstream") / "upstream.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yun.engines.xllamacpp_worker",
            "--model",
            str(tiny_model),
            "--port",
            str(port),
            "--parallel",
            "1",
            "--ctx",
            "512",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "upstream died"
            import time

            time.sleep(0.1)
        yield url + "/v1"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def test_external_openai_compatible_upstream(yun: Harness, upstream: str) -> None:
    yun.services.catalog.add_external("remote-tiny", upstream.removesuffix("/v1"), upstream_model="whatever")
    await sync_deployments(yun.services)
    remote = yun.services.router.get("remote-tiny").replicas[0]
    await _until(lambda: remote.healthy, timeout=30)
    try:
        r = await yun.client.chat.completions.create(model="remote-tiny", messages=MSG, max_tokens=4)  # type: ignore[arg-type]
        assert r.model == "remote-tiny"
        assert r.usage is not None and r.usage.completion_tokens == 4
        stream = await yun.client.chat.completions.create(
            model="remote-tiny",
            messages=MSG,
            max_tokens=3,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        listed = {m.id: m for m in (await yun.client.models.list()).data}
        assert listed["remote-tiny"].model_extra["card"]["source"].startswith("external")  # type: ignore[index]
    finally:
        yun.services.catalog.remove("remote-tiny")
        await sync_deployments(yun.services)
    with pytest.raises(openai.NotFoundError):
        await yun.client.chat.completions.create(model="remote-tiny", messages=MSG, max_tokens=2)  # type: ignore[arg-type]


async def test_unreachable_external_upstream_is_503(yun: Harness) -> None:
    yun.services.catalog.add_external("dead-remote", f"http://127.0.0.1:{free_port()}")
    await sync_deployments(yun.services)
    try:
        with pytest.raises(openai.InternalServerError) as info:
            await yun.client.chat.completions.create(model="dead-remote", messages=MSG)  # type: ignore[arg-type]
        assert info.value.status_code == 503
    finally:
        yun.services.catalog.remove("dead-remote")
        await sync_deployments(yun.services)


async def test_a_replica_that_refuses_before_any_output_is_retried_on_another(yun: Harness) -> None:
    """Two replicas; one's engine is killed. Until the backend has restarted it, the gateway still has
    it in rotation: a request sent there is refused (nothing computed) and goes to the other replica, so
    no client sees an error, streamed or not. (An engine that accepts a request and then drops it is
    not retried elsewhere: the request itself may be what kills engines; see test_engine_connections.)"""
    yun.services.deployments.scale("tiny", 2, max_replicas=2)
    try:
        await sync_deployments(yun.services)
        await _until(lambda: sum(r.healthy for r in yun.services.router.get("tiny").replicas) == 2)
        doomed = yun.services.router.get("tiny").replicas[0]
        os.kill(_engine_pid(doomed.address), signal.SIGKILL)
        await _until(lambda: _refused(doomed.address), timeout=10)  # dead: its port takes no connection
        for _ in range(3):
            r = await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
            assert r.usage is not None and r.usage.completion_tokens == 2
            stream = await yun.client.chat.completions.create(
                model="tiny",
                messages=MSG,
                max_tokens=2,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        assert not doomed.healthy  # taken out of this gateway's rotation by the failed attempt
    finally:
        yun.services.deployments.scale("tiny", 1, max_replicas=1)
        await sync_deployments(yun.services)


async def test_a_replica_that_dies_mid_stream_ends_it_with_an_error_event_billed_what_was_received(
    yun: Harness,
) -> None:
    """Once output has reached the client a request cannot move to another replica: the stream ends with an
    OpenAI-style error event, and the request is billed the tokens the client received, no more, no less."""
    from tests.integration.tenants import new_org, org_get

    org, key = await new_org(yun, "100")
    address = yun.services.router.get("tiny").replicas[0].address
    received, error = 0, None
    async with (
        httpx.AsyncClient(base_url=yun.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 3000, "stream": True}
        ) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                error = event["error"]
                continue
            if event.get("choices") and event["choices"][0]["delta"].get("content"):
                received += 1
                if received == 5:
                    os.kill(_engine_pid(address), signal.SIGKILL)
    assert error is not None and error["type"] == "server_error", error
    assert 5 <= received < 3000
    for _ in range(100):
        records = (await org_get(yun, key, "usage/records"))["data"]
        if records:
            break
        await asyncio.sleep(0.1)
    [record] = records
    assert record["completion_tokens"] == received  # each content chunk of llama.cpp's stream is one token
    await _until(
        lambda: bool(yun.services.router.get("tiny").replicas) and yun.services.router.get("tiny").replicas[0].healthy
    )


async def test_an_engine_reports_the_requests_it_runs(yun: Harness) -> None:
    """What a draining replica's stop waits on: the engine's own count of requests running or queued."""
    # Earlier tests killed engines: wait for the replicas the router sends requests to, all answering.
    secrets = {e.id: e.secret for e in yun.services.registry.of_deployment("tiny")}
    engines: list[OpenAIHTTPEngine] = []

    async def in_flight() -> int | None:
        counts = [await engine.in_flight() for engine in engines]
        return None if not counts or None in counts else sum(c or 0 for c in counts)

    async def routed() -> list[OpenAIHTTPEngine]:
        secrets.update({e.id: e.secret for e in yun.services.registry.of_deployment("tiny")})
        for engine in engines:
            await engine.aclose()
        engines[:] = [
            OpenAIHTTPEngine("probe", r.address, api_key=secrets.get(r.replica_id), keep_alive=False)
            for r in yun.services.router.get("tiny").replicas
            if r.healthy
        ]
        return engines if engines and await in_flight() is not None else []  # every one answers

    await _until_async(routed, lambda found: bool(found), timeout=120)
    entry = next(e for e in yun.services.registry.of_deployment("tiny") if e.endpoint == engines[0].base_url)
    try:
        await _until_async(in_flight, lambda n: n == 0, timeout=120)
        # Over real HTTP: the in-process transport would read the whole stream before the first chunk.
        client = openai.AsyncOpenAI(base_url=f"{yun.base_url}/v1", api_key=yun.key)
        stream = await client.chat.completions.create(
            model="tiny",
            messages=MSG,
            max_tokens=400,
            stream=True,  # type: ignore[arg-type]
        )
        seen = []
        async for _ in stream:
            if not seen:
                seen.append(await in_flight())
        await client.close()
        assert seen[0] is not None and seen[0] >= 1, seen
        await _until_async(in_flight, lambda n: n == 0)
        without_key = OpenAIHTTPEngine("probe", entry.endpoint, keep_alive=False)
        assert await without_key.in_flight() is None  # the metrics are behind the replica's secret too
        await without_key.aclose()
    finally:
        for engine in engines:
            await engine.aclose()


async def _until_async(read, done, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not done(await read()):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_rolling_update_under_load_fails_no_request(yun: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """An update that changes how replicas run starts a new generation: its replica is ready before the old
    one leaves rotation and drains, so clients sending requests throughout see no failure. The old replica
    stops once its engine reports nothing running, well before the drain bound for engines that do not
    say (raised here to 120 s)."""
    monkeypatch.setattr(yun.services.controller, "drain_s", 120.0)
    before = yun.services.deployments.get("tiny")
    assert before is not None
    # Earlier tests killed engines (a backend restarts one a few times, then fails it and the controller
    # places a new one; a restart window refuses requests): start from one replica that answers.
    for _ in range(240):
        try:
            await yun.client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1)  # type: ignore[arg-type]
            break
        except openai.APIStatusError:
            await asyncio.sleep(0.5)
    await _until(lambda: [e.state for e in yun.services.registry.of_deployment("tiny")] == ["ready"], timeout=120)
    old = {r.replica_id for r in yun.services.router.get("tiny").replicas}
    failures: list[BaseException] = []
    answered = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                stream = await yun.client.chat.completions.create(
                    model="tiny",
                    messages=MSG,
                    max_tokens=8,
                    stream=True,  # type: ignore[arg-type]
                )
                async for _ in stream:
                    pass
                answered += 1
            except openai.APIError as exc:
                failures.append(exc)
                await asyncio.sleep(0.5)

    clients = [asyncio.create_task(load()) for _ in range(3)]
    try:
        updated = yun.services.deployments.update("tiny", threads=1)
        assert updated.generation == before.generation + 1
        yun.services.controller.poke()  # type: ignore[union-attr]

        def rolled() -> bool:
            entries = yun.services.registry.of_deployment("tiny")
            live = [e for e in entries if e.state != "failed"]
            return bool(live) and all(e.generation == updated.generation and e.state == "ready" for e in live)

        await _until(rolled, timeout=120)
        await _until(lambda: not {r.replica_id for r in yun.services.router.get("tiny").replicas} & old)
        # Stopped (gone from the registry) once idle, long before the 120 s bound.
        await _until(lambda: not {e.id for e in yun.services.registry.of_deployment("tiny")} & old, timeout=60)
        settled = answered
        await _until(lambda: answered >= settled + 3)  # and the new replica serves
    finally:
        stop.set()
        await asyncio.gather(*clients)
        yun.services.deployments.update("tiny", threads=before.threads)
        await sync_deployments(yun.services)
    assert failures == [], failures
