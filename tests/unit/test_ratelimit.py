"""One rate-limit contract, two real stores (in-process and Redis). Time is injected: nothing sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.support.net import free_port
from yun.errors import YunError
from yun.gateway.ratelimit import (
    Decision,
    Limits,
    LimitStatus,
    MemoryRateLimitStore,
    RateLimitBackendError,
    RateLimitStore,
    RedisRateLimitStore,
)
from yun.gateway.ratelimit.decision import format_reset

REDIS_URL = os.environ.get("YUN_TEST_REDIS", "redis://127.0.0.1:6379/0")
T0 = 1000.0


async def _redis_or_skip() -> Redis:
    client: Redis = Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return client


@contextlib.asynccontextmanager
async def _fresh_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on a reachable Redis (else skip); its keys are deleted afterwards."""
    client = await _redis_or_skip()
    prefix = f"yun:rl:test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with _fresh_prefix() as prefix:
        yield prefix


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RateLimitStore]:
    """The same contract runs against both backends."""
    if request.param == "memory":
        memory = MemoryRateLimitStore()
        yield memory
        await memory.aclose()
        return
    async with _fresh_prefix() as prefix:
        redis_store = RedisRateLimitStore(REDIS_URL, prefix=prefix)
        yield redis_store
        await redis_store.aclose()


async def _take(store: RateLimitStore, scopes: list[tuple[str, Limits]], n: int, tokens: int = 0) -> list[Decision]:
    return [await store.acquire(scopes, tokens, now=T0) for _ in range(n)]


async def test_admits_up_to_rpm_then_refuses(store: RateLimitStore) -> None:
    key = [("key:a", Limits(rpm=50))]
    admitted = await _take(store, key, 50)
    assert all(d.allowed for d in admitted)
    assert [d.requests.remaining for d in admitted if d.requests] == list(range(49, -1, -1))
    refused = await store.acquire(key, 0, now=T0)
    assert not refused.allowed and refused.reason == "rpm" and refused.scope == "key:a"
    assert refused.retry_after_s == pytest.approx(60 / 50, abs=1e-3)
    assert refused.requests == LimitStatus(limit=50, remaining=0, reset_s=pytest.approx(60.0, abs=1e-3))


async def test_refills_smoothly_over_time(store: RateLimitStore) -> None:
    key = [("key:a", Limits(rpm=60))]
    await _take(store, key, 60)
    assert not (await store.acquire(key, 0, now=T0 + 0.9)).allowed
    assert (await store.acquire(key, 0, now=T0 + 1.0)).allowed  # one request back per second
    assert not (await store.acquire(key, 0, now=T0 + 1.0)).allowed
    later = await store.acquire(key, 0, now=T0 + 1000)  # a long idle: full again, not more than full
    assert later.allowed and later.requests is not None and later.requests.remaining == 59


async def test_tpm_counts_estimates_and_adjust_gives_tokens_back(store: RateLimitStore) -> None:
    key = [("key:a", Limits(tpm=1000))]
    assert (await store.acquire(key, 600, now=T0)).allowed
    refused = await store.acquire(key, 600, now=T0)
    assert not refused.allowed and refused.reason == "tpm"
    assert refused.retry_after_s == pytest.approx(200 * 60 / 1000, abs=1e-3)  # 200 tokens short
    await store.adjust(key, 200 - 600, now=T0)  # the request used 200 tokens, not 600
    ok = await store.acquire(key, 600, now=T0)
    assert ok.allowed and ok.tokens is not None and ok.tokens.remaining == 200
    await store.adjust(key, -1_000_000, now=T0)  # giving back never goes below an empty bucket
    assert (await store.acquire(key, 1000, now=T0)).allowed
    assert not (await store.acquire(key, 1, now=T0)).allowed


async def test_underestimate_puts_scope_in_debt(store: RateLimitStore) -> None:
    key = [("key:a", Limits(tpm=1000))]
    assert (await store.acquire(key, 1000, now=T0)).allowed
    await store.adjust(key, 500, now=T0)  # the request used 1500 tokens
    refused = await store.acquire(key, 0, now=T0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(30.0, abs=1e-3)
    assert refused.tokens == LimitStatus(limit=1000, remaining=0, reset_s=pytest.approx(90.0, abs=1e-3))
    assert (await store.acquire(key, 0, now=T0 + 30)).allowed


async def test_refusal_in_one_scope_counts_nothing_in_the_others(store: RateLimitStore) -> None:
    key_limits, org_limits = Limits(rpm=10, tpm=10_000), Limits(rpm=100, tpm=1000)
    both = [("key:a", key_limits), ("org:o", org_limits)]
    assert (await store.acquire(both, 800, now=T0)).allowed
    for _ in range(5):
        refused = await store.acquire(both, 800, now=T0)
        assert not refused.allowed and refused.reason == "tpm" and refused.scope == "org:o"
    alone = await store.acquire([("key:a", key_limits)], 0, now=T0)
    assert alone.requests is not None and alone.requests.remaining == 8  # 10 - 1 admitted - this one
    assert alone.tokens is not None and alone.tokens.remaining == 10_000 - 800


async def test_reports_the_most_constraining_scope(store: RateLimitStore) -> None:
    both = [("key:a", Limits(rpm=100, tpm=1000)), ("org:o", Limits(rpm=10, tpm=1_000_000))]
    d = await store.acquire(both, 100, now=T0)
    assert d.requests == LimitStatus(limit=10, remaining=9, reset_s=pytest.approx(6.0))
    assert d.tokens == LimitStatus(limit=1000, remaining=900, reset_s=pytest.approx(6.0))


async def test_headers_for_admitted_and_refused(store: RateLimitStore) -> None:
    key = [("key:a", Limits(rpm=60, tpm=1000))]
    assert (await store.acquire(key, 100, now=T0)).headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }
    refused = await store.acquire(key, 950, now=T0)
    assert refused.headers()["Retry-After"] == "3"  # 50 tokens short = 3.0 s
    assert refused.headers()["x-ratelimit-remaining-tokens"] == "900"
    only_rpm = await store.acquire([("key:b", Limits(rpm=5))], 10**9, now=T0)
    assert only_rpm.headers() == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12s",
    }


async def test_tokens_beyond_the_whole_limit_are_refused_outright(store: RateLimitStore) -> None:
    key = [("key:a", Limits(rpm=10, tpm=1000))]
    huge = await store.acquire(key, 1001, now=T0)
    assert not huge.allowed and huge.reason == "tokens_exceed_limit" and huge.scope == "key:a"
    assert huge.retry_after_s == math.inf and "Retry-After" not in huge.headers()
    fits = await store.acquire(key, 1000, now=T0)  # the refusal counted nothing
    assert fits.allowed and fits.requests is not None and fits.requests.remaining == 9


async def test_unlimited_scopes_always_admit_and_count_nothing(store: RateLimitStore) -> None:
    free = await _take(store, [("key:a", Limits())], 1000, tokens=10**9)
    assert all(d.allowed and d.headers() == {} for d in free)
    mixed = [("key:a", Limits()), ("org:o", Limits(rpm=2))]
    assert [d.allowed for d in await _take(store, mixed, 3)] == [True, True, False]


async def test_independent_keys_do_not_interfere(store: RateLimitStore) -> None:
    limits = Limits(rpm=3)
    assert [d.allowed for d in await _take(store, [("key:a", limits)], 4)] == [True, True, True, False]
    assert all(d.allowed for d in await _take(store, [("key:b", limits)], 3))


async def test_concurrent_tasks_cannot_overshoot(store: RateLimitStore) -> None:
    key = [("key:a", Limits(rpm=50))]
    decisions = await asyncio.gather(*(store.acquire(key, 0, now=T0) for _ in range(120)))
    assert sum(d.allowed for d in decisions) == 50


async def test_bad_arguments_are_refused(store: RateLimitStore) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        await store.acquire([("key:a", Limits(rpm=1)), ("key:a", Limits(rpm=1))], 0, now=T0)
    with pytest.raises(ValueError, match="tokens"):
        await store.acquire([("key:a", Limits(rpm=1))], -1, now=T0)
    with pytest.raises(ValueError, match="rpm"):
        Limits(rpm=0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (1, "1s"), (8.64, "8.64s"), (360, "6m0s"), (3661.5, "1h1m1.5s")],
)
def test_reset_is_formatted_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_redis_keys_expire_once_idle(redis_prefix: str) -> None:
    store = RedisRateLimitStore(REDIS_URL, prefix=redis_prefix)
    await store.acquire([("key:a", Limits(rpm=50))], 0, now=T0)
    await store.aclose()
    client = await _redis_or_skip()
    ttl_ms = await client.pttl(redis_prefix + "key:a")
    await client.aclose()
    # The bucket is full again 1.2 s later, plus a second of slack; the script rounds the float seconds up
    # to whole ms (ceil(1200.0000000000455) is 1201), so one ms more is exact, not slack.
    assert 0 < ttl_ms <= 1200 + 1000 + 1


async def test_unreachable_redis_raises_backend_error() -> None:
    port = free_port()  # a port nobody listens on
    store = RedisRateLimitStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    with pytest.raises(RateLimitBackendError) as info:
        await store.acquire([("key:a", Limits(rpm=1))], 0)
    assert isinstance(info.value, YunError) and isinstance(info.value.__cause__, RedisError)
    await store.aclose()


_HAMMER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from redis.asyncio import Redis
    from yun.gateway.ratelimit import Limits, RedisRateLimitStore

    async def main(url, prefix):
        barrier = Redis.from_url(url)
        await barrier.incr(prefix + "ready")
        while int(await barrier.get(prefix + "ready")) < 2:  # start together, so the two really race
            await asyncio.sleep(0.001)
        await barrier.aclose()
        store = RedisRateLimitStore(url, prefix=prefix)
        start = time.time()
        admitted = sum([(await store.acquire([("key:shared", Limits(rpm=50))], 0)).allowed for _ in range(100)])
        end = time.time()
        await store.aclose()
        print(json.dumps({"admitted": admitted, "start": start, "end": end}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_limit_holds_across_two_gateway_processes(redis_prefix: str) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _HAMMER, REDIS_URL, redis_prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode() for _, err in outputs]
    runs = [json.loads(out) for out, _ in outputs]
    total = sum(r["admitted"] for r in runs)
    elapsed = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    # The bucket starts full (50) and refills 50/60 per second while the two processes run.
    allowance = math.ceil(elapsed * 50 / 60) + 1
    assert 50 <= total <= 50 + allowance, (runs, elapsed)
