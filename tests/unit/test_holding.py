"""The hold's life as one context manager: every way out of `async with holds.open(...)` settles the
request exactly once, with the right status and the engine's counts, on a real BillingService over a
real SQLite database. Prices are whole nanodollars per token (1 per input, 4 per output), so every
expected cost below is plain arithmetic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from yun.billing import BillingService, Estimate
from yun.cluster import Pool, ReplicaSpec
from yun.errors import ClientDisconnected, EngineFailure, QuotaExceeded, RateLimited
from yun.gateway.holding import Holding, Holds
from yun.gateway.ratelimit import Limits, MemoryRateLimitStore
from yun.gateway.relay import relay
from yun.gateway.usage import Usage
from yun.store import Database, OrganizationRepository, upgrade
from yun.store.money import MoneyRepository, money_writer
from yun.tenancy import Principal

MODEL = "m"
GRANT = 10**12
PRINCIPAL = Principal(key_id="key-1", org_id="org-a", is_platform_admin=False)
DEPLOYMENT = Pool(ReplicaSpec(MODEL, "chat", url="http://fake.invalid", context_length=4096), [])
EST = Estimate(100, 200)


def cost(prompt: int, completion: int) -> int:
    return prompt * 1 + completion * 4


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'yun.db'}"
    upgrade(url)
    database = Database(url)
    OrganizationRepository(database).get_or_create("org-a", "a")
    money = MoneyRepository(database)
    money.add_price(MODEL, 1_000_000, 4_000_000, 1_000_000)
    money.credit("org-a", "grant", GRANT, "g1")
    yield database
    database.dispose()


@pytest.fixture
def seen() -> list[Usage]:
    """What the usage sinks (metrics) were given."""
    return []


@pytest.fixture
async def holds(db: Database, seen: list[Usage]) -> AsyncIterator[Holds]:
    money_writer(db).bind_loop(asyncio.get_running_loop())  # writes on the running loop, as the server does
    yield Holds(BillingService(db, "gw-1"), MemoryRateLimitStore(), [seen.append], progress_interval_s=0.0)
    money_writer(db).bind_loop(None)


def records(db: Database) -> list[dict[str, Any]]:
    return MoneyRepository(db).usage_records("org-a", limit=1000)


def the_one_record(db: Database, held: Holding) -> dict[str, Any]:
    """Exactly one settlement, of this request; nothing left held; the balance is the grant less it."""
    found = records(db)
    assert [r["request_id"] for r in found] == [held.usage.request_id]
    assert MoneyRepository(db).balance("org-a") == (GRANT - found[0]["cost"], 0)
    return found[0]


def opened(holds: Holds, principal: Principal = PRINCIPAL, est: Estimate = EST) -> Holding:
    return holds.open(principal, DEPLOYMENT, "chat.completions", est, {})


async def test_success_settles_once_with_the_engine_counts(holds: Holds, db: Database, seen: list[Usage]) -> None:
    async with opened(holds) as held:
        assert MoneyRepository(db).balance("org-a")[1] > 0  # the maximum cost is held while it runs
        held.usage.replica = "r/0"
        held.usage.add({"prompt_tokens": 30, "completion_tokens": 12})
    record = the_one_record(db, held)
    assert (record["status"], record["prompt_tokens"], record["completion_tokens"]) == ("ok", 30, 12)
    assert record["cost"] == cost(30, 12) == held.usage.cost
    assert seen == [held.usage]


async def test_an_engine_failure_before_any_output_bills_nothing(holds: Holds, db: Database) -> None:
    with pytest.raises(EngineFailure):
        async with opened(holds) as held:
            raise EngineFailure("the replica died")
    record = the_one_record(db, held)
    assert (record["status"], record["prompt_tokens"], record["completion_tokens"], record["cost"]) == (
        "error",
        0,
        0,
        0,
    )


async def test_a_failure_mid_stream_bills_what_was_generated(holds: Holds, db: Database) -> None:
    with pytest.raises(EngineFailure):
        async with opened(holds) as held:
            held.usage.see_timings({"prompt_n": 30, "cache_n": 0, "predicted_n": 7})
            raise EngineFailure("the replica died")
    record = the_one_record(db, held)
    assert (record["status"], record["prompt_tokens"], record["completion_tokens"]) == ("error", 30, 7)
    assert record["cost"] == cost(30, 7)


async def test_a_client_that_left_the_queue_costs_nothing(holds: Holds, db: Database) -> None:
    with pytest.raises(ClientDisconnected):
        async with opened(holds) as held:
            raise ClientDisconnected("the client closed the connection while the request waited")
    record = the_one_record(db, held)
    assert (record["status"], record["cost"]) == ("aborted", 0)


async def test_a_cancelled_request_is_aborted_and_billed_what_was_generated(
    holds: Holds, db: Database, seen: list[Usage]
) -> None:
    inside = asyncio.Event()
    held: Holding | None = None

    async def request() -> None:
        nonlocal held
        async with opened(holds) as held:
            held.usage.see_timings({"prompt_n": 30, "cache_n": 0, "predicted_n": 5})
            inside.set()
            await asyncio.Event().wait()  # the engine never answers; the client leaves

    task = asyncio.ensure_future(request())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held is not None
    record = the_one_record(db, held)
    assert (record["status"], record["prompt_tokens"], record["completion_tokens"]) == ("aborted", 30, 5)
    assert record["cost"] == cost(30, 5)
    assert seen == [held.usage]


async def test_a_settlement_inside_the_block_is_the_only_one(holds: Holds, db: Database, seen: list[Usage]) -> None:
    """A stream settles before its final usage chunk; the client leaving after it changes nothing."""
    with pytest.raises(GeneratorExit):
        async with opened(holds) as held:
            held.usage.add({"prompt_tokens": 30, "completion_tokens": 12})
            await held.settle("ok")
            await held.settle("error")
            raise GeneratorExit
    record = the_one_record(db, held)
    assert (record["status"], record["cost"]) == ("ok", cost(30, 12))
    assert seen == [held.usage]


async def test_progress_is_recorded_only_when_new_and_never_after_settling(holds: Holds, db: Database) -> None:
    writer = money_writer(db)
    before = writer.progress_writes
    async with opened(holds) as held:
        held.usage.see_timings({"prompt_n": 30, "cache_n": 0, "predicted_n": 3})
        held.record_progress()
        held.record_progress()  # nothing new: no second write
        assert held.progress == (30, 3, 0)
        held.usage.add({"prompt_tokens": 30, "completion_tokens": 4})
        await held.settle()
        held.record_progress()
    assert writer.progress_writes - before <= 1
    assert the_one_record(db, held)["completion_tokens"] == 4


async def test_a_refused_hold_settles_nothing_and_gives_its_tokens_back(holds: Holds, db: Database) -> None:
    tpm = 2 * 10**12
    limited = Principal(key_id="key-1", org_id="org-a", is_platform_admin=False, tpm_limit=tpm)
    entered = False
    with pytest.raises(QuotaExceeded):
        async with opened(holds, limited, Estimate(100, 10**12)):  # 4x what the grant covers
            entered = True
    assert not entered and records(db) == [] and MoneyRepository(db).balance("org-a") == (GRANT, 0)
    for _ in range(500):  # the refused tokens go back to the TPM window in the background
        if not holds._background:
            break
        await asyncio.sleep(0.01)
    # The whole TPM budget is there again: a request of all of it is admitted.
    decision = await holds.limiter.acquire([("key:key-1", Limits(None, tpm))], tpm)
    assert decision.allowed


async def test_a_rate_limited_request_holds_nothing(holds: Holds, db: Database) -> None:
    limited = Principal(key_id="key-1", org_id="org-a", is_platform_admin=False, rpm_limit=1)
    headers: dict[str, str] = {}
    async with holds.open(limited, DEPLOYMENT, "chat.completions", EST, headers) as first:
        pass
    assert headers  # the limits' headers, for the response
    with pytest.raises(RateLimited):
        async with opened(holds, limited):
            pass
    assert the_one_record(db, first)["status"] == "ok"


async def test_a_stream_nobody_starts_holds_nothing(holds: Holds, db: Database) -> None:
    held = opened(holds)
    chunks = relay(held, "/v1/chat/completions", [{"messages": []}], True, [], False)
    await chunks.aclose()  # type: ignore[attr-defined]
    assert records(db) == [] and MoneyRepository(db).balance("org-a") == (GRANT, 0)
    assert held.settled  # nothing opened, nothing to settle
