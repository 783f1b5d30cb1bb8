"""One front door: the inference endpoints and the admin API enter the same app, pass the same
middleware and answer the same errors (body limit, auth, methods, server errors); /docs needs no CDN.

No models are deployed: everything here is decided before a request reaches an engine."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.uvicorn_app import served
from yun.api import create_app
from yun.settings import Settings
from yun.tenancy import DEFAULT_ORG

LIMIT = 64 * 1024
CHAT = "/v1/chat/completions"
INFERENCE = [CHAT, "/v1/completions", "/v1/embeddings"]
# (method, path) of routes that take a JSON body: inference, organization (tenant) and admin.
BODY_ROUTES = [("POST", p) for p in INFERENCE] + [("POST", "/v1/organization/keys"), ("POST", "/admin/orgs")]


class Recorder:
    """A middleware added the ordinary way (`app.add_middleware`): it must see every request."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def app_and_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, str, list[str]]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("yun"),
        defaults={"chat": False, "embedding": False},
        server={"max_body_bytes": LIMIT},
    )
    app = create_app(settings)
    services = app.state.services
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    admin_key = services.keys.issue(DEFAULT_ORG, "platform admin", platform_admin=True).secret
    seen: list[str] = []
    app.add_middleware(Recorder, seen=seen)
    yield app, admin_key, seen


@pytest_asyncio.fixture
async def http(app_and_keys: tuple[FastAPI, str, list[str]]) -> AsyncIterator[httpx.AsyncClient]:
    app, admin_key, _ = app_and_keys
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # as a server: answer 500, log
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://yun", headers=headers) as client:
        yield client


@contextlib.asynccontextmanager
async def _serving(app: FastAPI, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """`app` behind a real uvicorn on loopback, with a client carrying `key`."""
    headers = {"Authorization": f"Bearer {key}"}
    async with served(app) as url, httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        yield client


@pytest_asyncio.fixture
async def live(app_and_keys: tuple[FastAPI, str, list[str]]) -> AsyncIterator[httpx.AsyncClient]:
    app, admin_key, _ = app_and_keys
    async with _serving(app, admin_key) as client:
        yield client


def _openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text
    if code is not None:
        assert error["code"] == code
    return dict(error)


def test_openapi_documents_the_inference_endpoints(app_and_keys: tuple[FastAPI, str, list[str]]) -> None:
    spec = app_and_keys[0].openapi()
    schemas = spec["components"]["schemas"]
    for path, request, answer in [
        (CHAT, "ChatCompletionRequest", "ChatCompletion"),
        ("/v1/completions", "CompletionRequest", "Completion"),
        ("/v1/embeddings", "EmbeddingRequest", "CreateEmbeddingResponse"),
    ]:
        op = spec["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{request}"}
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{answer}"}
        assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
        assert request in schemas and answer in schemas
    assert "messages" in schemas["ChatCompletionRequest"]["properties"]


async def test_added_middleware_sees_inference_requests(
    http: httpx.AsyncClient, app_and_keys: tuple[FastAPI, str, list[str]]
) -> None:
    seen = app_and_keys[2]
    seen.clear()
    for path in INFERENCE:
        await http.post(path, json={"model": "nope"}, headers={"Authorization": ""})
    await http.get("/admin/orgs")
    assert seen == [f"POST {p}" for p in INFERENCE] + ["GET /admin/orgs"]


async def test_method_not_allowed_is_the_same_everywhere(http: httpx.AsyncClient) -> None:
    answers = [await http.get(p) for p in INFERENCE] + [await http.delete("/admin/orgs")]
    errors = [_openai_error(r, 405, "method_not_allowed") for r in answers]
    assert len({(e["type"], e["message"]) for e in errors}) == 1
    assert [r.headers["allow"] for r in answers[:3]] == ["POST"] * 3


async def test_missing_or_wrong_key_is_the_same_everywhere(http: httpx.AsyncClient) -> None:
    errors = []
    for method, path in BODY_ROUTES:
        for auth in ("", "Bearer yun-not-a-key"):
            r = await http.request(method, path, json={"model": "m", "name": "n"}, headers={"Authorization": auth})
            errors.append(_openai_error(r, 401))
    assert len({(e["type"], e["code"]) for e in errors}) == 1


async def test_a_server_error_is_the_same_everywhere(
    http: httpx.AsyncClient, app_and_keys: tuple[FastAPI, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: a bug in key verification, the first thing every authenticated route does.
    async def broken(secret: str | None) -> None:
        raise RuntimeError("a bug with a secret detail")

    monkeypatch.setattr(app_and_keys[0].state.services.keys, "verified", broken)
    for method, path in BODY_ROUTES:
        r = await http.request(method, path, json={"model": "m", "name": "n"})
        error = _openai_error(r, 500)
        assert error["type"] == "server_error" and "secret detail" not in r.text


def _chunked(total: int, piece: int = 16 * 1024) -> Any:
    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            chunk = b"x" * min(piece, total - sent)
            sent += len(chunk)
            yield chunk

    return body()


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_oversized_bodies_are_413_in_process(http: httpx.AsyncClient, method: str, path: str) -> None:
    sized = await http.request(method, path, content=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"})
    _openai_error(sized, 413, "payload_too_large")
    chunked = await http.request(
        method, path, content=_chunked(LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    _openai_error(chunked, 413, "payload_too_large")


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_oversized_bodies_are_413_over_http(live: httpx.AsyncClient, method: str, path: str) -> None:
    # A body well past the limit, as a real upload: the client writes all of it before it reads the answer.
    big = 3 * LIMIT
    sized = await live.request(method, path, content=b"x" * big, headers={"Content-Type": "application/json"})
    _openai_error(sized, 413, "payload_too_large")
    chunked = await live.request(method, path, content=_chunked(big), headers={"Content-Type": "application/json"})
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    _openai_error(chunked, 413, "payload_too_large")


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_a_chunked_body_under_the_limit_is_parsed(live: httpx.AsyncClient, method: str, path: str) -> None:
    """Read up front by the body limit, the body still reaches the route whole."""
    payload = b'{"model": 5, "name": 5, "messages": 5, "prompt": 5, "input": 5, "description": 5}'

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    r = await live.request(method, path, content=pieces(), headers={"Content-Type": "application/json"})
    _openai_error(r, 400)  # wrong types: the JSON arrived whole and was parsed, not refused as unreadable
    assert "parsing the body" not in r.text


async def test_docs_load_without_any_external_url(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.text), page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 3  # the JS bundle, the CSS, the favicon
    for url in assets:
        r = await http.get(url)
        assert r.status_code == 200 and len(r.content) > 0, url
    assert (await http.get("/openapi.json")).status_code == 200


async def test_a_client_that_waits_for_100_continue_gets_the_413_without_sending(live: httpx.AsyncClient) -> None:
    """curl asks before it sends a big body (`Expect: 100-continue`): it must be told no at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.base_url.port)
    try:
        writer.write(
            f"POST {CHAT} HTTP/1.1\r\nHost: yun\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * LIMIT}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head


async def test_a_9_mb_chunked_upload_is_413_with_the_default_limit(tmp_path: Path) -> None:
    """The attack as reported: 9 MB, chunked, against the default 8 MiB limit, on inference and admin."""
    settings = Settings(data_dir=tmp_path, defaults={"chat": False, "embedding": False})
    assert settings.server.max_body_bytes < 9_000_000
    app = create_app(settings)
    app.state.services.orgs.get_or_create(DEFAULT_ORG, "default")
    key = app.state.services.keys.issue(DEFAULT_ORG, "admin", platform_admin=True).secret
    async with _serving(app, key) as client:
        for path in (CHAT, "/admin/orgs"):
            r = await client.post(path, content=_chunked(9_000_000, 64 * 1024))
            assert r.request.headers["transfer-encoding"] == "chunked"
            _openai_error(r, 413, "payload_too_large")
