"""Issue 10 item 3: cards, /v1/models and errors state the context a request is served with, which the
operator sets globally (engine.context_per_slot, 512 in this harness) or per model (`context`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.conftest import CONTEXT_PER_SLOT, Harness
from yun.api.lifespan import sync_deployments

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _until_healthy(yun: Harness, model_id: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(r.healthy for r in yun.services.router.get(model_id).replicas):
        assert asyncio.get_running_loop().time() < deadline, f"{model_id} did not become healthy"
        await asyncio.sleep(0.1)


async def test_a_per_model_context_is_what_the_replica_serves(yun: Harness, tiny_model: Path) -> None:
    served = 256
    assert served != CONTEXT_PER_SLOT
    yun.services.catalog.add_local("tiny-256", tiny_model, "chat", context=served)
    await sync_deployments(yun.services)
    try:
        await _until_healthy(yun, "tiny-256")
        card = (await yun.client.models.retrieve("tiny-256")).model_extra["card"]  # type: ignore[index]
        assert card["context_length"] == served and card["trained_context_length"] == 4096
        assert "served_context" not in card
        # Without max_tokens the tiny model (which never stops on its own) fills exactly the served context.
        r = await yun.http.post(
            "/v1/chat/completions", json={"model": "tiny-256", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert usage["prompt_tokens"] + usage["completion_tokens"] == served
        # Errors state the served figure too.
        r = await yun.http.post("/v1/completions", json={"model": "tiny-256", "prompt": "hello " * 300})
        assert r.status_code == 400, r.text
        assert f"maximum context length is {served} tokens" in r.json()["error"]["message"]
    finally:
        yun.services.catalog.remove("tiny-256")
        await sync_deployments(yun.services)
