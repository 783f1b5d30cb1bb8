"""Redis rate limits: several gateway processes share one set of buckets.

Check-and-count runs as one Lua script, which Redis executes atomically, so two gateways can never
both take the last slot. The script mirrors `_gcra.try_admit` operation for operation (same float
arithmetic, TATs stored with 17 significant digits) and returns the TATs; the Python side builds the
`Decision` from them with the same code as the in-process store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from yun.gateway.ratelimit import _gcra
from yun.gateway.ratelimit.base import RateLimitBackendError, check_scopes
from yun.gateway.ratelimit.decision import Decision, Limits

__all__ = ["RedisRateLimitStore"]

# Times are seconds on the Redis server clock (shared by all gateways, unlike their own clocks), counted
# from 2023-11-14 rather than 1970: a smaller magnitude keeps doubles precise to ~10 ns, which matters
# when one token of a large TPM limit is worth microseconds.
_PRELUDE = """
local window, eps = {window!r}, {eps!r}
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
local function expire(key, r, t)
  -- An idle key outlives its fullest bucket by a second, then vanishes (an absent key is a full bucket).
  redis.call('PEXPIRE', key, math.ceil((math.max(r, t, now) - now) * 1000) + 1000)
end
"""

# KEYS: one hash per scope, fields r (requests TAT) and t (tokens TAT).
# ARGV: now ('' = server clock), tokens, then rpm and tpm of each scope (0 = unlimited).
# Returns {admitted 0/1, now, r1, t1, r2, t2, ...}: the TATs after counting if admitted, else untouched.
_ACQUIRE = (
    _PRELUDE.format(window=_gcra.WINDOW_S, eps=_gcra.EPSILON_S)
    + """
local tokens = tonumber(ARGV[2])
local old, new, ok = {}, {}, true
for i, key in ipairs(KEYS) do
  local rpm, tpm = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local stored = redis.call('HMGET', key, 'r', 't')
  local r, t = tonumber(stored[1]) or now, tonumber(stored[2]) or now
  old[i], new[i] = {r, t}, {r, t}
  if rpm > 0 then
    new[i][1] = math.max(r, now) + 1 * (window / rpm)
    if new[i][1] - now > window + eps then ok = false end
  end
  if tpm > 0 then
    new[i][2] = math.max(t, now) + tokens * (window / tpm)
    if tokens > tpm or new[i][2] - now > window + eps then ok = false end
  end
end
local out = {ok and 1 or 0, num(now)}
for i, key in ipairs(KEYS) do
  local r, t = old[i][1], old[i][2]
  if ok then
    r, t = new[i][1], new[i][2]
    redis.call('HSET', key, 'r', num(r), 't', num(t))
    expire(key, r, t)
  end
  out[#out + 1] = num(r)
  out[#out + 1] = num(t)
end
return out
"""
)

# KEYS: the scopes that have a TPM limit. ARGV: now, token delta, then the tpm of each scope.
_ADJUST = (
    _PRELUDE.format(window=_gcra.WINDOW_S, eps=_gcra.EPSILON_S)
    + """
local delta = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local tpm = tonumber(ARGV[2 + i])
  local stored = redis.call('HMGET', key, 'r', 't')
  local r, t = tonumber(stored[1]) or now, tonumber(stored[2]) or now
  t = math.max(math.max(t, now) + delta * (window / tpm), now)
  redis.call('HSET', key, 't', num(t))
  expire(key, r, t)
end
return 1
"""
)


class RedisRateLimitStore:
    """Buckets in Redis hashes named `prefix + scope`, expiring once full.

    One Redis (or a primary with replicas) only: the script touches the key and org hashes together,
    which Redis Cluster allows only within one hash slot.
    """

    def __init__(self, url: str, prefix: str = "yun:rl:", *, timeout_s: float = 1.0, max_connections: int = 64) -> None:
        self._prefix = prefix
        # Fail fast: a rate-limit check that hangs holds the whole request. One immediate retry covers a
        # pooled connection that went stale (Redis restarted); a retried script that had already run
        # over-counts one request, erring on the side of the limit. The pool blocks (up to timeout_s)
        # when all connections are busy: the default pool raises "Too many connections" instead.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis: Redis = Redis.from_pool(pool)
        # EVALSHA, loading the script again if Redis lost it (restart, SCRIPT FLUSH).
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._adjust = self._redis.register_script(_ADJUST)

    async def acquire(self, scopes: Sequence[tuple[str, Limits]], tokens: int, now: float | None = None) -> Decision:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        limited = check_scopes(scopes)
        if not limited:
            return Decision(allowed=True)
        args: list[str | int] = [_now_arg(now), tokens]
        for _, limits in limited:
            args += [limits.rpm or 0, limits.tpm or 0]
        reply = await self._call(self._acquire, [self._prefix + name for name, _ in limited], args)
        server_now = float(reply[1])
        values = [float(v) for v in reply[2:]]
        tats = list(zip(values[0::2], values[1::2], strict=True))
        if reply[0] == 1:
            return _gcra.admitted(server_now, limited, tats)
        return _gcra.refused(server_now, limited, tokens, tats)

    async def adjust(self, scopes: Sequence[tuple[str, Limits]], token_delta: int, now: float | None = None) -> None:
        limited = [(name, limits.tpm) for name, limits in check_scopes(scopes) if limits.tpm is not None]
        if token_delta == 0 or not limited:
            return
        keys = [self._prefix + name for name, _ in limited]
        await self._call(self._adjust, keys, [_now_arg(now), token_delta, *(tpm for _, tpm in limited)])

    async def aclose(self) -> None:
        try:
            await self._redis.aclose()
        except RedisError as exc:
            raise RateLimitBackendError(f"closing the Redis rate-limit store failed: {exc}") from exc

    async def _call(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise RateLimitBackendError(f"Redis rate-limit store unavailable: {exc}") from exc


def _now_arg(now: float | None) -> str:
    # repr() round-trips a float exactly through Lua's tonumber.
    return "" if now is None else repr(float(now))
