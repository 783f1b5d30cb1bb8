"""Tenants take turns at a busy model: through the real API, on the real engine (2 slots)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.conftest import Harness
from tests.integration.tenants import new_org, org_get

pytestmark = pytest.mark.asyncio(loop_scope="session")
BURST = 8


async def test_a_small_tenant_is_served_between_a_big_tenants_queued_requests(yun: Harness) -> None:
    _, big = await new_org(yun, None)
    _, small = await new_org(yun, None)
    finished: list[str] = []
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 48, "temperature": 0}

    async with httpx.AsyncClient(base_url=yun.base_url, timeout=120) as http:

        async def ask(key: str, name: str) -> None:
            r = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            finished.append(name)

        burst = [asyncio.create_task(ask(big, f"big{i}")) for i in range(BURST)]
        for _ in range(500):  # until the burst fills both slots and queues the rest in the gateway
            if (await http.get("/health")).json()["models"]["tiny"]["queued"] >= BURST - 4:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the burst never queued")
        await ask(small, "small")
        await asyncio.gather(*burst)

    # First come first served would run the small tenant's request after all of the burst that queued
    # before it; taking turns runs it right after the burst's next one.
    after_small = len(finished) - 1 - finished.index("small")
    assert after_small >= 3, finished
    assert (await yun.http.get("/health")).json()["models"]["tiny"]["queued"] == 0


async def test_a_request_whose_client_leaves_while_queued_never_runs_and_costs_nothing(
    yun: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The burst must fill both slots: no headroom kept for the tenants of the tests just before.
    monkeypatch.setattr("yun.cluster.share.HEADROOM_WINDOW_S", 0.0)
    _, big = await new_org(yun, None)
    _, small = await new_org(yun, "1")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 64, "temperature": 0}

    async with httpx.AsyncClient(base_url=yun.base_url, timeout=120) as http:

        async def ask(key: str) -> httpx.Response:
            return await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})

        async def queued() -> int:
            return int((await http.get("/health")).json()["models"]["tiny"]["queued"])

        burst = [asyncio.create_task(ask(big)) for _ in range(BURST)]
        for _ in range(500):
            if await queued() >= BURST - 4:
                break
            await asyncio.sleep(0.01)
        before = await queued()
        leaving = asyncio.create_task(ask(small))  # its own connection (the pool has no idle one)
        for _ in range(500):
            if await queued() > before or all(t.done() for t in burst):
                break
            await asyncio.sleep(0.005)
        leaving.cancel()  # the client hangs up while its request waits for a slot
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert all(r.status_code == 200 for r in await asyncio.gather(*burst))

    records = (await org_get(yun, small, "usage/records"))["data"]
    assert len(records) == 1, records
    rec = records[0]
    assert rec["status"] == "aborted" and rec["completion_tokens"] == 0 and rec["cost_nanodollars"] == 0, rec
    balance = await org_get(yun, small, "balance")
    assert balance["held_nanodollars"] == 0 and balance["balance_nanodollars"] == 1_000_000_000


async def test_an_organizations_weight_reaches_the_fair_queues_at_once(yun: Harness) -> None:
    org, _ = await new_org(yun, None)
    admin = {"Authorization": f"Bearer {yun.admin_key}"}
    r = await yun.http.put(f"/admin/orgs/{org}/weight", json={"weight": 2}, headers=admin)
    assert r.status_code == 200 and r.json()["weight"] == 2, r.text
    pools = list(yun.services.router.pools())
    assert pools and all(pool.queue._weight(org) == 2 for pool in pools)
    assert (await yun.http.get(f"/admin/orgs/{org}", headers=admin)).json()["weight"] == 2
    for bad in (0, -1, 1000, "heavy"):
        r = await yun.http.put(f"/admin/orgs/{org}/weight", json={"weight": bad}, headers=admin)
        assert r.status_code == 400 and r.json()["error"]["param"] == "weight", (bad, r.text)
    r = await yun.http.put(f"/admin/orgs/{org}/weight", json={"weight": 1}, headers=admin)
    assert all(pool.queue._weight(org) == 1 for pool in pools)
