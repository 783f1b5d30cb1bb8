"""Item 14: tenants never see an upstream address or its credentials (models, errors, logs), and a key
sees only the models it may use."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from tests.api.conftest import Api
from yun.api.lifespan import spec_for, sync_deployments
from yun.engines import redact_url
from yun.store import ModelRepository
from yun.store.secrets import load_key

SECRETS = ("s3cret-pass", "upstream-user", "sk-upstream-key")


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """A real OpenAI-compatible upstream on loopback that fails every completion with a 500 naming the
    URL it was called at; returns its port and the Authorization headers it saw."""
    seen: list[str] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"object": "list", "data": []})

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"error": {"message": "upstream exploded"}}, status=500)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"127.0.0.1:{port}", seen
    await runner.cleanup()


def _clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_models_errors_and_logs_carry_no_upstream_secret(
    api: Api, upstream: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    address, seen = upstream
    api.services.catalog.add_external("ext", f"http://upstream-user:s3cret-pass@{address}", kind="chat")
    api.services.catalog.add_external("ext-keyed", f"http://{address}", api_key="sk-upstream-key", kind="chat")
    await sync_deployments(api.services)
    _, key = await api.new_org()

    listed = await api.get("/v1/models", key)
    assert listed.status_code == 200 and {m["id"] for m in listed.json()["data"]} == {"ext", "ext-keyed"}
    _clean(listed.text)
    assert address not in listed.text and "upstream" not in listed.json()["data"][0]
    one = await api.get("/v1/models/ext", key)
    assert one.status_code == 200 and one.json()["card"]["source"] == "external OpenAI-compatible server"
    _clean(one.text)
    assert address not in one.text

    # A platform admin sees where it is served from, without the credentials.
    admin_view = (await api.get("/v1/models/ext")).json()
    assert admin_view["upstream"] == f"http://{address}"
    _clean(str(admin_view))

    # The engine failing: the tenant's error names neither the address nor a secret.
    for model in ("ext", "ext-keyed"):
        r = await api.http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers=api.auth(key),
        )
        assert r.status_code >= 500, r.text
        _clean(r.text)
        assert address not in r.text
    # The credentials still reach the upstream: as Basic auth from the URL, as a bearer token from api_key.
    assert "Basic dXBzdHJlYW0tdXNlcjpzM2NyZXQtcGFzcw==" in seen and "Bearer sk-upstream-key" in seen

    # Nothing logged meanwhile carries them either (messages, arguments and tracebacks).
    for record in caplog.records:
        _clean(record.getMessage() + (record.exc_text or ""))
    _clean(repr(spec_for(api.services.catalog.get("ext"), 512)))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cards_written_with_an_address_are_cleaned_when_read(api: Api) -> None:
    record = api.services.catalog.add_external("old", "http://a:b@10.0.0.1:8000/v1", kind="chat")
    settings = api.services.settings
    ModelRepository(api.services.db, load_key(None, settings.secrets_key_file)).upsert(
        dataclasses.replace(record, card={**record.card, "source": "external server http://a:s3cret-pass@10.0.0.1"})
    )
    _, key = await api.new_org()
    r = await api.get("/v1/models/old", key)
    assert r.status_code == 200 and "10.0.0.1" not in r.text
    _clean(r.text)


async def test_a_key_lists_and_finds_only_the_models_it_may_use(api: Api) -> None:
    for model_id in ("alpha", "beta"):
        api.services.catalog.add_external(model_id, "http://127.0.0.1:9", kind="chat")
    org, _ = await api.new_org()
    r = await api.http.post(
        f"/admin/orgs/{org}/keys", json={"name": "only-alpha", "allowed_models": ["alpha"]}, headers=api.auth()
    )
    limited = r.json()["secret"]
    r = await api.http.post(f"/admin/orgs/{org}/keys", json={"name": "all"}, headers=api.auth())
    unlimited = r.json()["secret"]

    assert [m["id"] for m in (await api.get("/v1/models", limited)).json()["data"]] == ["alpha"]
    assert (await api.get("/v1/models/alpha", limited)).status_code == 200
    r = await api.get("/v1/models/beta", limited)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.json() == (await api.get("/v1/models/nope", limited)).json() | {
        "error": {**r.json()["error"], "message": "The model 'beta' does not exist"}
    }
    assert {m["id"] for m in (await api.get("/v1/models", unlimited)).json()["data"]} == {"alpha", "beta"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@host:8000/v1", "http://host:8000/v1"),
        ("https://host/v1?api_key=secret#frag", "https://host/v1"),
        ("http://:token@[::1]:9000", "http://[::1]:9000"),
        ("http://host:notaport/v1", "http://host/v1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
