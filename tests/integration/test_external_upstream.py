"""External models (issue 10, item 12): errors of a real OpenAI-compatible upstream reach the client as
the same class of error, with the upstream's message but never its address or credentials; a 429 keeps
its Retry-After. Both base-URL forms (`http://host:port` and `.../v1`) work.

The upstream is a real HTTP server on 127.0.0.1 (aiohttp), answering by the model name it is asked for;
Yun runs in-process with the official `openai` client in front.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from aiohttp import web

from yun.api import bootstrap, build_services, create_app
from yun.settings import Settings
from yun.tenancy import DEFAULT_ORG

UPSTREAM_KEY = "sk-upstream-secret-4f9a"
UPSTREAM_PASSWORD = "hunter2-upstream"
BASIC = "Basic " + base64.b64encode(f"u:{UPSTREAM_PASSWORD}".encode()).decode()

# model asked for -> (status, headers, error message); "ok" answers normally.
ERRORS: dict[str, tuple[int, dict[str, str], str]] = {
    "busy": (429, {"Retry-After": "7"}, "Rate limit reached for requests"),
    "bad": (400, {}, "Invalid 'temperature': see {url}/docs (key {key})"),
    "denied": (401, {}, "Incorrect API key provided: {key}"),
    "broken": (500, {}, "internal error at {url}"),
    "down": (503, {}, "overloaded"),
    # llama.cpp's answer to an embedding input longer than its batch (a 500, and advice for its operator).
    "toolong": (500, {}, "input is too large to process. increase the physical batch size"),
}


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


async def _upstream() -> tuple[web.AppRunner, int, list[str]]:
    seen_auth: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization", ""))
        model = (await request.json())["model"]
        if model == "ok":
            return web.json_response(_completion(model))
        status, headers, message = ERRORS[model]
        # Echo the credential Yun sent, as providers do ("Incorrect API key provided: sk-..."), and an address.
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            credential = base64.b64decode(credential).decode().partition(":")[2]
        text = message.format(url=f"http://u:{UPSTREAM_PASSWORD}@{request.host}", key=credential)
        body = {"error": {"message": text, "type": "upstream_error", "code": None}}
        return web.json_response(body, status=status, headers=headers)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port), seen_auth


@dataclass
class Yun:
    client: openai.AsyncOpenAI
    http: httpx.AsyncClient
    seen_auth: list[str]


@pytest_asyncio.fixture
async def yun(tmp_path: Path) -> AsyncIterator[Yun]:
    runner, port, seen_auth = await _upstream()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(data_dir=tmp_path, defaults={"chat": False, "embedding": False})
    services = build_services(settings)
    bootstrap(services)
    key = services.keys.issue(DEFAULT_ORG, "t").secret
    for model in ("ok", *ERRORS):
        services.catalog.add_external(model, base, upstream_model=model, api_key=UPSTREAM_KEY)
    services.catalog.add_external("ok-v1", base + "/v1/", upstream_model="ok", api_key=UPSTREAM_KEY)
    with_password = f"http://u:{UPSTREAM_PASSWORD}@127.0.0.1:{port}/v1"
    services.catalog.add_external("ok-basic", with_password, upstream_model="ok")  # HTTP basic auth
    services.catalog.add_external("bad-basic", with_password, upstream_model="bad")
    app = create_app(settings, services)
    try:
        async with app.router.lifespan_context(app):
            http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://yun",
                headers={"Authorization": f"Bearer {key}"},
            )
            client = openai.AsyncOpenAI(base_url="http://yun/v1", api_key=key, http_client=http, max_retries=0)
            yield Yun(client, http, seen_auth)
            await http.aclose()
    finally:
        await runner.cleanup()


def _chat(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


@pytest.mark.parametrize(
    ("model", "auth"),
    [("ok", f"Bearer {UPSTREAM_KEY}"), ("ok-v1", f"Bearer {UPSTREAM_KEY}"), ("ok-basic", BASIC)],
)
async def test_both_base_url_forms_reach_the_upstream(yun: Yun, model: str, auth: str) -> None:
    answer = await yun.client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hi"
    assert yun.seen_auth[-1] == auth
    health = (await yun.http.get("/health")).json()
    assert health["models"][model]["healthy_replicas"] == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_429_is_a_429_with_its_retry_after(yun: Yun, stream: bool) -> None:
    r = await yun.http.post("/v1/chat/completions", json=_chat("busy", stream))
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "7"
    assert r.json()["error"]["message"] == "Rate limit reached for requests"
    with pytest.raises(openai.RateLimitError):
        await yun.client.chat.completions.create(model="busy", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("model", "status", "sdk_error"),
    [
        ("bad", 400, openai.BadRequestError),
        ("bad-basic", 400, openai.BadRequestError),
        ("denied", 403, openai.PermissionDeniedError),
        ("broken", 502, openai.InternalServerError),
        ("down", 503, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_keep_their_class_and_never_show_its_address_or_key(
    yun: Yun, model: str, status: int, sdk_error: type[Exception], stream: bool
) -> None:
    r = await yun.http.post("/v1/chat/completions", json=_chat(model, stream))
    assert r.status_code == status, r.text
    text = r.text
    for secret in (UPSTREAM_KEY, UPSTREAM_PASSWORD, "127.0.0.1"):
        assert secret not in text, text
    if model.startswith("bad"):
        assert "Invalid 'temperature'" in r.json()["error"]["message"]
    with pytest.raises(sdk_error):
        await yun.client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=stream
        )


async def test_llamacpps_too_large_input_is_a_clear_context_error(yun: Yun) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await yun.client.chat.completions.create(model="toolong", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length" in info.value.message and "batch" not in info.value.message
