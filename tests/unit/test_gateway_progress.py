"""The gateway records a long stream's progress on its hold, throttled; a short stream records none.

A fake engine speaking llama.cpp's streaming dialect (running counts in `timings`, usage at the end)
stands in for the replica, so the stream's pace is the test's; the database is real (both of them).
Every bound below follows from the pace alone (chunks at least GAP_S apart, records at least
INTERVAL_S apart), never from how fast the machine is.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from yun.billing import BillingService
from yun.cluster import Endpoint, Pool, ReplicaSpec
from yun.gateway import Gateway, Metrics
from yun.gateway.ratelimit import MemoryRateLimitStore
from yun.store import Database
from yun.store.money import MoneyRepository, money_writer
from yun.tenancy import Principal

MODEL = "fake"
PROMPT = 23
INTERVAL_S = 0.5
GAP_S = 0.03
LONG = 60  # chunks: at least 1.8 s of stream, so at least 3 records (see the long-stream test)
SHORT = 6
PRICE = (1_000_000, 4_000_000, 1_000_000)  # n$ per 1M tokens: 1 n$ per input token, 4 per output
PRINCIPAL = Principal(key_id="key-1", org_id="org-a", is_platform_admin=False)
BODY = {"messages": [{"role": "user", "content": "Say something."}]}


class FakeLlama:
    """Streams `n` one-token chunks carrying llama.cpp's running `timings`, then its usage."""

    name = "fake/0"
    speaks_llamacpp = True

    def __init__(self) -> None:
        self.gap_s = 0.0
        self.pause_after: int | None = None
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        n = int(body["max_tokens"])
        for i in range(1, n + 1):
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
            if i == self.pause_after:
                self.paused.set()
                await self.resume.wait()
            delta = {"content": "x"}
            timings = {"prompt_n": PROMPT, "cache_n": 0, "predicted_n": i}
            yield [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}], "timings": timings}]
        yield [
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": PROMPT, "completion_tokens": n}},
        ]

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("only streams here")

    async def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class OneModel:
    """The one piece of a cluster the gateway's stream path uses: `get(model_id)`."""

    def __init__(self, deployment: Pool) -> None:
        self.deployment = deployment

    def get(self, model_id: str, org_id: str | None = None) -> Pool:
        assert model_id == MODEL
        return self.deployment


@pytest.fixture
def db(org_db: Database) -> Database:
    return org_db


@pytest.fixture
def engine() -> FakeLlama:
    return FakeLlama()


@pytest.fixture
def gateway(db: Database, engine: FakeLlama, tmp_path: Path) -> Gateway:
    spec = ReplicaSpec(MODEL, "chat", url="http://fake.invalid", context_length=4096)
    replica = Endpoint(f"{spec.model_id}/0", engine, 4)  # type: ignore[arg-type]
    billing = BillingService(db, "gw-1")
    billing.money.add_price(MODEL, *PRICE)
    billing.money.credit("org-a", "grant", 10**12, "g1")
    cluster: Any = OneModel(Pool(spec, [replica]))
    return Gateway(cluster, Metrics(), billing, MemoryRateLimitStore(), progress_interval_s=INTERVAL_S)


async def consume(gateway: Gateway, max_tokens: int) -> tuple[str, dict[str, Any]]:
    body = {**BODY, "max_tokens": max_tokens}
    chunks = await gateway.chat_stream(PRINCIPAL, MODEL, body, include_usage=True, headers={})
    request_id, usage = "", {}
    async for batch in chunks:
        for chunk in batch:
            request_id = chunk["id"]
            usage = chunk.get("usage") or usage
    return request_id, usage


def stored(db: Database, request_id: str) -> tuple[tuple[int, int], dict[str, Any] | None]:
    """(progress recorded on the reservation, usage record or None) as the database has them."""
    with db.reader.connect() as c:
        row = c.execute(
            text("SELECT progress_prompt_tokens, progress_completion_tokens FROM reservations WHERE request_id = :rid"),
            {"rid": request_id},
        ).one()
    found = [r for r in MoneyRepository(db).usage_records("org-a", limit=1000) if r["request_id"] == request_id]
    return (int(row[0]), int(row[1])), (found[0] if found else None)


@pytest.fixture
async def bound(db: Database) -> AsyncIterator[None]:
    """Writes of an embedded database on the running loop, as the server does (PostgreSQL: its thread)."""
    money_writer(db).bind_loop(asyncio.get_running_loop())
    yield
    money_writer(db).bind_loop(None)


async def test_a_short_stream_writes_no_progress(gateway: Gateway, db: Database, bound: None) -> None:
    writer = gateway.billing.writer
    before = writer.progress_writes
    started = time.perf_counter()
    request_id, usage = await consume(gateway, SHORT)
    elapsed = time.perf_counter() - started
    assert elapsed < INTERVAL_S, "the stream was meant to end within one interval"
    assert writer.progress_writes == before
    progress, record = stored(db, request_id)
    assert progress == (0, 0)
    assert record is not None and (record["status"], record["completion_tokens"]) == ("ok", SHORT)
    assert usage["completion_tokens"] == SHORT


async def test_a_long_stream_records_progress_at_most_once_an_interval(
    gateway: Gateway, engine: FakeLlama, db: Database, bound: None
) -> None:
    engine.gap_s = GAP_S
    writer = gateway.billing.writer
    before = writer.progress_writes
    started = time.perf_counter()
    request_id, usage = await consume(gateway, LONG)
    elapsed = time.perf_counter() - started
    records = writer.progress_writes - before
    # Record k is due no sooner than k intervals into the stream, which lies within `elapsed`.
    assert records <= elapsed / INTERVAL_S, (records, elapsed)
    # Chunks come at least GAP_S apart, so a record falls due within ceil(INTERVAL_S / GAP_S) chunks of
    # the stream's start and of the record before; the next chunk writes it.
    per = math.ceil(INTERVAL_S / GAP_S)
    assert records >= 1 + (LONG - per) // per, (records, elapsed)
    (prompt, completion), record = stored(db, request_id)
    assert prompt == PROMPT and 0 < completion <= LONG  # the last record: the engine's running count then
    # The settlement is untouched by the records: the engine's final count, priced as always.
    assert record is not None and (record["status"], record["completion_tokens"]) == ("ok", LONG)
    assert record["cost"] == PROMPT * 1 + LONG * 4 == round(usage["cost"] * 1e9)


async def test_recovery_after_a_crash_mid_stream_bills_the_recorded_progress(
    gateway: Gateway, engine: FakeLlama, db: Database, bound: None
) -> None:
    """The gateway dies mid-stream (here: its stream is frozen, and a restarted gateway of the same
    name recovers): the hold is settled at the tokens recorded, not at zero, and only once."""
    engine.gap_s, engine.pause_after = GAP_S, LONG // 2
    body = {**BODY, "max_tokens": LONG}
    chunks = await gateway.chat_stream(PRINCIPAL, MODEL, body, include_usage=True, headers={})
    seen: list[str] = []

    async def relay_to_client() -> None:
        async for batch in chunks:
            seen.extend(chunk["id"] for chunk in batch)

    pending = asyncio.ensure_future(relay_to_client())
    await asyncio.wait_for(engine.paused.wait(), 60)
    request_id = seen[0]
    # The stream ran at least (LONG / 2) * GAP_S = 0.9 s > INTERVAL_S: a record is written or on its way.
    for _ in range(300):
        progress, _ = stored(db, request_id)
        if progress != (0, 0):
            break
        await asyncio.sleep(0.01)
    assert progress[0] == PROMPT and 0 < progress[1] < LONG // 2

    gateway.billing.money.add_price(MODEL, 10**10, 10**10, 10**10)  # dearer; the hold keeps version 1
    restarted = BillingService(db, "gw-2")  # the next process: a new instance, alone on the database
    assert await asyncio.to_thread(restarted.recover, exclusive=True) == 1
    _, record = stored(db, request_id)
    assert record is not None and record["status"] == "interrupted"
    assert (record["prompt_tokens"], record["completion_tokens"]) == progress
    assert record["cost"] == PROMPT * 1 + progress[1] * 4

    # The frozen stream ends (in a real crash it is gone): its own settlement finds the hold settled.
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    for _ in range(300):
        if gateway.billing.money.balance("org-a")[1] == 0:
            break
        await asyncio.sleep(0.01)
    assert gateway.billing.money.balance("org-a") == (10**12 - record["cost"], 0)
    assert [r["request_id"] for r in gateway.billing.money.usage_records("org-a")] == [request_id]
