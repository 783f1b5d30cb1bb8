"""Tenants take turns at a busy model: through the real API, on the real engine (2 slots)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.conftest import Harness
from tests.integration.test_billing import new_org

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
