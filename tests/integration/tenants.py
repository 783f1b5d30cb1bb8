"""Tenants, prices and usage records on the shared in-process server, for the integration modules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai

from tests.integration.conftest import Harness

NANO = 1_000_000_000
# USD per 1M tokens: one input token costs $0.001, one output token $0.002, one cached input token $0.0005.
PRICE = {"input": "1000", "output": "2000", "cached_input": "500"}
FREE = {"input": "0", "output": "0"}


def admin(yun: Harness) -> dict[str, str]:
    return {"Authorization": f"Bearer {yun.admin_key}"}


async def new_org(yun: Harness, credits: str | None, **key: Any) -> tuple[str, str]:
    r = await yun.http.post(
        "/admin/orgs", json={"name": f"org-{id(key)}-{asyncio.get_running_loop().time()}"}, headers=admin(yun)
    )
    assert r.status_code == 201, r.text
    org_id = r.json()["id"]
    if credits is not None:
        r = await yun.http.post(f"/admin/orgs/{org_id}/credits", json={"amount": credits}, headers=admin(yun))
        assert r.status_code == 201, r.text
    r = await yun.http.post(
        f"/admin/orgs/{org_id}/keys", json={"name": "k", "role": "owner", **key}, headers=admin(yun)
    )
    assert r.status_code == 201, r.text
    return org_id, r.json()["secret"]


def client_for(yun: Harness, key: str) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=yun.app)
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://yun/v1", max_retries=0, http_client=httpx.AsyncClient(transport=transport)
    )


async def org_get(yun: Harness, key: str, path: str) -> Any:
    r = await yun.http.get(f"/v1/organization/{path}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def expected_cost(prompt: int, cached: int, completion: int) -> int:
    return (prompt - cached) * 1_000_000 + cached * 500_000 + completion * 2_000_000


async def set_price(yun: Harness, model: str, price: dict[str, str]) -> None:
    r = await yun.http.put(f"/admin/prices/{model}", json=price, headers=admin(yun))
    assert r.status_code == 200, r.text
    yun.services.billing.invalidate()


@contextlib.asynccontextmanager
async def priced(yun: Harness, price: dict[str, str] = PRICE, model: str = "tiny") -> AsyncIterator[None]:
    """`model` costs `price` inside the block; afterwards it is free again (a newer zero price version),
    as later modules sharing this server expect."""
    await set_price(yun, model, price)
    try:
        yield
    finally:
        await set_price(yun, model, FREE)


async def settled_records(yun: Harness, key: str, model: str = "tiny") -> list[dict[str, Any]]:
    """The org's usage records once a request the client left has been settled: there is a record and
    the replica has nothing in flight."""
    replica = yun.services.router.get(model).replicas[0]
    for _ in range(100):
        records: list[dict[str, Any]] = (await org_get(yun, key, "usage/records"))["data"]
        if records and replica.outstanding == 0:
            return records
        await asyncio.sleep(0.1)
    raise AssertionError(f"no settled usage record after 10 s (in flight: {replica.outstanding})")
