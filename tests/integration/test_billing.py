"""Prepaid billing through the real HTTP API: holds, exact charges, quotas, aborts, prices, free tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.integration.conftest import Harness
from tests.integration.tenants import (
    NANO,
    PRICE,
    admin,
    client_for,
    expected_cost,
    new_org,
    org_get,
    priced,
    settled_records,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
MSG = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module", autouse=True)
async def priced_here(yun: Harness) -> AsyncIterator[None]:
    async with priced(yun):
        yield


async def test_charge_is_exact_and_the_ledger_balances(yun: Harness) -> None:
    org, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        r = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=7)  # type: ignore[arg-type]
    u = r.usage
    assert u is not None and u.completion_tokens == 7
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    cost = expected_cost(u.prompt_tokens, cached or 0, 7)
    assert round(u.model_extra["cost"] * NANO) == cost  # type: ignore[index]
    bal = await org_get(yun, key, "balance")
    assert bal["balance_nanodollars"] == 10 * NANO - cost and bal["held_nanodollars"] == 0
    assert yun.services.billing.money.ledger_sum(org) == bal["balance_nanodollars"]
    records = (await org_get(yun, key, "usage/records"))["data"]
    assert len(records) == 1 and records[0]["request_id"] == r.id
    assert records[0]["completion_tokens"] == 7 and records[0]["status"] == "ok"


async def test_hold_that_cannot_be_covered_is_refused_before_compute(yun: Harness) -> None:
    org, key = await new_org(yun, "0.2")  # covers ~86 prompt-bound tokens + 1 output token, not + 100
    async with client_for(yun, key) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=100)  # type: ignore[arg-type]
    assert info.value.status_code == 429 and info.value.code == "insufficient_quota"
    assert info.value.type == "insufficient_quota"
    assert (await org_get(yun, key, "usage/records"))["data"] == []
    bal = await org_get(yun, key, "balance")
    assert bal["balance_nanodollars"] == NANO // 5 and bal["held_nanodollars"] == 0
    # A small enough request still fits: the balance decides, not a flag.
    async with client_for(yun, key) as client:
        r = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 1


async def test_org_without_credit_and_unpriced_model(yun: Harness) -> None:
    _, key = await new_org(yun, None)
    async with client_for(yun, key) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2)  # type: ignore[arg-type]
        # minilm has no price: it is free to call, and still metered.
        e = await client.embeddings.create(model="minilm", input="hello")
    assert e.usage.prompt_tokens > 0
    records = (await org_get(yun, key, "usage/records"))["data"]
    assert [r["model_id"] for r in records] == ["minilm"] and records[0]["cost_nanodollars"] == 0


@pytest.mark.parametrize("include_usage", [True, False])
async def test_streams_are_billed_whether_or_not_the_client_asks_for_usage(yun: Harness, include_usage: bool) -> None:
    org, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
        stream = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=6, stream=True, **kwargs)  # type: ignore[arg-type]
        chunks = [c async for c in stream]
    records = (await org_get(yun, key, "usage/records"))["data"]
    assert len(records) == 1 and records[0]["completion_tokens"] == 6 and records[0]["status"] == "ok"
    assert records[0]["cost_nanodollars"] == expected_cost(records[0]["prompt_tokens"], records[0]["cached_tokens"], 6)
    if include_usage:
        assert round(chunks[-1].usage.model_extra["cost"] * NANO) == records[0]["cost_nanodollars"]  # type: ignore[union-attr]
    else:
        assert all(c.usage is None for c in chunks)
    bal = await org_get(yun, key, "balance")
    assert bal["balance_nanodollars"] == 10 * NANO - records[0]["cost_nanodollars"]


async def test_engine_failure_before_output_bills_nothing(yun: Harness) -> None:
    from yun.api.lifespan import sync_deployments

    yun.services.catalog.add_external("dead-billing", "http://127.0.0.1:9")
    await sync_deployments(yun.services)
    await yun.http.put("/admin/prices/dead-billing", json=PRICE, headers=admin(yun))
    try:
        org, key = await new_org(yun, "1")
        async with client_for(yun, key) as client:
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="dead-billing", messages=MSG, max_tokens=5)  # type: ignore[arg-type]
        records = (await org_get(yun, key, "usage/records"))["data"]
        assert len(records) == 1 and records[0]["status"] == "error" and records[0]["cost_nanodollars"] == 0
        bal = await org_get(yun, key, "balance")
        assert bal["balance_nanodollars"] == NANO and bal["held_nanodollars"] == 0
    finally:
        yun.services.catalog.remove("dead-billing")
        await sync_deployments(yun.services)


async def test_price_change_never_rewrites_past_charges(yun: Harness) -> None:
    org, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3)  # type: ignore[arg-type]
        r = await yun.http.put("/admin/prices/tiny", json={"input": "2000", "output": "4000"}, headers=admin(yun))
        new_version = r.json()["version"]
        yun.services.billing.invalidate()
        await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3)  # type: ignore[arg-type]
    await yun.http.put("/admin/prices/tiny", json=PRICE, headers=admin(yun))
    yun.services.billing.invalidate()
    old, new = sorted((await org_get(yun, key, "usage/records"))["data"], key=lambda x: x["created_at"])
    assert new["price_version"] == new_version == old["price_version"] + 1
    assert old["cost_nanodollars"] == expected_cost(old["prompt_tokens"], old["cached_tokens"], 3)
    # Version 2 gave no cached price, so cached input costs what input does ($0.002 a token).
    assert new["cost_nanodollars"] == new["prompt_tokens"] * 2_000_000 + 3 * 4_000_000
    history = (await yun.http.get("/admin/prices/tiny", headers=admin(yun))).json()["data"]
    assert [p["version"] for p in history] == sorted(p["version"] for p in history)


async def test_free_tier_is_used_before_credits(yun: Harness) -> None:
    org, key = await new_org(yun, "1")
    r = await yun.http.put(
        "/admin/free-allowances", json={"model": "tiny", "monthly_tokens": 10, "org_id": org}, headers=admin(yun)
    )
    assert r.status_code == 200, r.text
    yun.services.billing.invalidate()
    async with client_for(yun, key) as client:
        await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4)  # type: ignore[arg-type]
        await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4)  # type: ignore[arg-type]
    first, second = sorted((await org_get(yun, key, "usage/records"))["data"], key=lambda x: x["created_at"])
    # 10 free tokens cover the dearest tokens first: the 4 output tokens, then 6 input tokens
    # (uncached before cached).
    assert first["free_tokens"] == 10 and second["free_tokens"] == 0
    uncached = first["prompt_tokens"] - first["cached_tokens"]
    free_uncached = min(6, uncached)
    free_cached = 6 - free_uncached
    assert (
        first["cost_nanodollars"]
        == (uncached - free_uncached) * 1_000_000 + (first["cached_tokens"] - free_cached) * 500_000
    )
    assert second["cost_nanodollars"] == expected_cost(second["prompt_tokens"], second["cached_tokens"], 4)


async def test_client_abort_is_billed_what_the_engine_generated(yun: Harness) -> None:
    org, key = await new_org(yun, "100")
    async with openai.AsyncOpenAI(api_key=key, base_url=yun.base_url + "/v1", max_retries=0) as client:
        stream = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3000, stream=True)  # type: ignore[arg-type]
        got = 0
        async for chunk in stream:
            got += bool(chunk.choices and chunk.choices[0].delta.content)
            if got == 5:
                break
        await stream.close()
    records = await settled_records(yun, key)
    assert len(records) == 1
    rec = records[0]
    assert rec["status"] == "aborted"
    # Billed by the engine's own running count: at least what reached the client, far less than asked.
    assert 5 <= rec["completion_tokens"] < 3000
    assert rec["cost_nanodollars"] == expected_cost(
        rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]
    )
    bal = await org_get(yun, key, "balance")
    assert bal["held_nanodollars"] == 0 and bal["balance_nanodollars"] == 100 * NANO - rec["cost_nanodollars"]


async def test_rate_limits_headers_and_429(yun: Harness) -> None:
    _, key = await new_org(yun, "10", rpm_limit=2, tpm_limit=100_000)
    h = {"Authorization": f"Bearer {key}"}
    body = {"model": "tiny", "messages": MSG, "max_tokens": 2}
    first = await yun.http.post("/v1/chat/completions", json=body, headers=h)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert (await yun.http.post("/v1/chat/completions", json=body, headers=h)).status_code == 200
    third = await yun.http.post("/v1/chat/completions", json=body, headers=h)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["x-ratelimit-remaining-requests"] == "0"


async def test_request_larger_than_tpm_is_refused(yun: Harness) -> None:
    _, key = await new_org(yun, "10", tpm_limit=50)
    r = await yun.http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": MSG, "max_tokens": 200},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 429 and "too large" in r.json()["error"]["message"]


async def test_key_scopes_and_roles(yun: Harness) -> None:
    org, owner = await new_org(yun, "10")
    h = {"Authorization": f"Bearer {owner}"}
    r = await yun.http.post("/v1/organization/keys", json={"name": "viewer", "role": "billing-viewer"}, headers=h)
    viewer = r.json()["secret"]
    r = await yun.http.post("/v1/organization/keys", json={"name": "emb", "allowed_models": ["minilm"]}, headers=h)
    only_minilm = r.json()["secret"]
    body = {"model": "tiny", "messages": MSG, "max_tokens": 1}
    r = await yun.http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    assert (
        await yun.http.get("/v1/organization/usage", headers={"Authorization": f"Bearer {viewer}"})
    ).status_code == 200
    r = await yun.http.post("/v1/organization/keys", json={"name": "x"}, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    r = await yun.http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {only_minilm}"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "model"
    r = await yun.http.post(
        "/v1/embeddings", json={"model": "minilm", "input": "x"}, headers={"Authorization": f"Bearer {only_minilm}"}
    )
    assert r.status_code == 200
    # Revocation is effective immediately.
    keys = (await yun.http.get("/v1/organization/keys", headers=h)).json()["data"]
    emb = next(k for k in keys if k["name"] == "emb")
    assert (await yun.http.delete(f"/v1/organization/keys/{emb['id']}", headers=h)).status_code == 200
    r = await yun.http.post(
        "/v1/embeddings", json={"model": "minilm", "input": "x"}, headers={"Authorization": f"Bearer {only_minilm}"}
    )
    assert r.status_code == 401


async def test_statement_json_and_csv(yun: Harness) -> None:
    org, key = await new_org(yun, "10")
    async with client_for(yun, key) as client:
        await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3)  # type: ignore[arg-type]
    from datetime import UTC, datetime

    month = datetime.now(UTC).strftime("%Y-%m")
    st = await org_get(yun, key, f"statements/{month}")
    assert st["reconciled"] is True
    r = await yun.http.get(
        f"/v1/organization/statements/{month}?format=csv", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv") and "tiny" in r.text
    bad = await yun.http.get("/v1/organization/statements/2026-13", headers={"Authorization": f"Bearer {key}"})
    assert bad.status_code == 400
