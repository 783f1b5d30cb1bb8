"""The load gateways publish for the autoscaler: per deployment, requests queued and in flight.

Each gateway sees only its own pools; the controller scales from the sum over every live gateway. A
gateway publishes about once a second (`LoadPublisher`), and only when its load moved or, while a load
stays, as a heartbeat; it publishes nothing while idle. Where:

- Redis (`RedisLoadBoard`, when `redis_url` is set): a hash per deployment (`yun:load:<deployment>`),
  a field per gateway instance holding "queued in_flight expires", times on the Redis server's clock;
  the hash itself expires too. A dead gateway's field stops counting at its expiry.
- else the database (`DatabaseLoadBoard`: the `gateway_loads` table, store/loads.py), same rules.

What is per gateway: the queue (fairness, the cold-start wait) and the in-flight counts each gateway
keeps for the replicas it routes to. What is global: only these sums, at most a TTL old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from redis import Redis
from redis.exceptions import RedisError

from yun.store.loads import Load, LoadRepository

if TYPE_CHECKING:
    from yun.cluster.router import Router

__all__ = [
    "DatabaseLoadBoard",
    "Load",
    "LoadBoard",
    "LoadBoardError",
    "LoadPublisher",
    "RedisLoadBoard",
    "gateway_load",
    "load_ttl_s",
]

log = logging.getLogger("yun.cluster")


class LoadBoardError(Exception):
    """The load could not be published or read (Redis or the database is unreachable). The autoscaler
    then changes nothing: an unknown load is not a zero load."""


class LoadBoard(Protocol):
    """Where gateways publish their load and the controller reads the totals."""

    def publish(self, gateway_id: str, loads: Mapping[str, Load], ttl_s: float) -> None:
        """Replace what `gateway_id` published with `loads` (absent or zero: none), for `ttl_s`."""
        ...

    def totals(self, deployment_ids: Sequence[str]) -> dict[str, Load]:
        """The sums over live gateways (absent: no load)."""
        ...

    def close(self) -> None: ...


class DatabaseLoadBoard:
    """The load in the database (`gateway_loads`), for installations without Redis."""

    def __init__(self, repo: LoadRepository) -> None:
        self._repo = repo

    def publish(self, gateway_id: str, loads: Mapping[str, Load], ttl_s: float) -> None:
        self._repo.publish(gateway_id, loads, ttl_s)

    def totals(self, deployment_ids: Sequence[str]) -> dict[str, Load]:
        return self._repo.totals(deployment_ids)

    def close(self) -> None:
        pass


# KEYS: one hash per deployment. ARGV: gateway, ttl, then per key "queued in_flight" or "" (no load: remove).
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local gateway, ttl = ARGV[1], tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local v = ARGV[2 + i]
  if v == '' then
    redis.call('HDEL', key, gateway)
  else
    redis.call('HSET', key, gateway, v .. ' ' .. string.format('%.3f', now + ttl))
    -- The hash outlives its longest-lived field (never shortened: another gateway's may last longer).
    if redis.call('TTL', key) < math.ceil(ttl) then redis.call('EXPIRE', key, math.ceil(ttl)) end
  end
end
return 0
"""

# KEYS: one hash per deployment. Returns queued and in-flight sums per key; expired fields are removed.
_TOTALS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local queued, in_flight = 0, 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local q, f, expires = string.match(fields[j + 1], '^(%d+) (%d+) ([%d.]+)$')
    if expires ~= nil and tonumber(expires) > now then
      queued, in_flight = queued + tonumber(q), in_flight + tonumber(f)
    else
      redis.call('HDEL', key, fields[j])
    end
  end
  out[#out + 1] = queued
  out[#out + 1] = in_flight
end
return out
"""


class RedisLoadBoard:
    """The load in Redis, shared by every gateway and the controller. Each script runs atomically on the
    Redis server's clock, so gateways' clocks need not agree."""

    def __init__(self, url: str, prefix: str = "yun:load:") -> None:
        self._prefix = prefix
        self._redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._publish = self._redis.register_script(_PUBLISH)
        self._totals = self._redis.register_script(_TOTALS)
        self._published: dict[str, set[str]] = {}
        """gateway -> the deployments it last published a load for (their fields go when the load does)."""

    def publish(self, gateway_id: str, loads: Mapping[str, Load], ttl_s: float) -> None:
        busy = {d: load for d, load in loads.items() if load.busy}
        ids = sorted(busy.keys() | self._published.get(gateway_id, set()))
        if not ids:
            return
        values = [f"{busy[d].queued} {busy[d].in_flight}" if d in busy else "" for d in ids]
        try:
            self._publish(keys=[self._prefix + d for d in ids], args=[gateway_id, ttl_s, *values])
        except RedisError as exc:
            raise LoadBoardError(f"could not publish the load to Redis: {exc}") from exc
        self._published[gateway_id] = set(busy)

    def totals(self, deployment_ids: Sequence[str]) -> dict[str, Load]:
        ids = list(deployment_ids)
        if not ids:
            return {}
        try:
            sums = self._totals(keys=[self._prefix + d for d in ids])
        except RedisError as exc:
            raise LoadBoardError(f"could not read the load from Redis: {exc}") from exc
        out = {}
        for i, d in enumerate(ids):
            load = Load(int(sums[2 * i]), int(sums[2 * i + 1]))
            if load.busy:
                out[d] = load
        return out

    def close(self) -> None:
        self._redis.close()


def gateway_load(router: Router) -> dict[str, Load]:
    """This gateway's non-zero loads, by deployment (external upstreams scale themselves: left out). A
    fine-tuned model's requests count toward its base deployment, whose replicas serve them."""
    out: dict[str, Load] = {}
    for pool in router.pools():
        if pool.spec.external:
            continue
        load = Load(len(pool.queue), sum(r.outstanding for r in pool.replicas))
        if load.busy:
            out[pool.load_id] = out.get(pool.load_id, Load()) + load
    return out


def load_ttl_s(interval_s: float) -> float:
    """How long a published load counts: a few publishing intervals, so one late heartbeat never drops it."""
    return max(3.0, 5 * interval_s)


class LoadPublisher:
    """Publishes this gateway's load from its router's pools: checked every `interval_s` (at once when a
    request starts waiting for a deployment at zero), written when it moved, else re-written every
    third of its TTL while it is not zero. `woken` runs after a write for a request waiting for a
    deployment at zero (so a controller in the same process reconciles at once)."""

    def __init__(
        self,
        router: Router,
        board: LoadBoard,
        gateway_id: str,
        interval_s: float = 1.0,
        woken: Callable[[], None] | None = None,
    ) -> None:
        self.router = router
        self.board = board
        self.gateway_id = gateway_id
        self.interval_s = interval_s
        self.ttl_s = load_ttl_s(interval_s)
        self.woken = woken or (lambda: None)
        self._last: dict[str, Load] = {}
        self._last_at = -math.inf

    async def publish_once(self) -> bool:
        """Publish if the load moved or a heartbeat is due; True if it wrote."""
        loads = gateway_load(self.router)
        if loads == self._last and (not loads or time.monotonic() - self._last_at < self.ttl_s / 3):
            return False
        await asyncio.to_thread(self.board.publish, self.gateway_id, loads, self.ttl_s)
        self._last, self._last_at = loads, time.monotonic()
        return True

    async def run(self) -> None:
        moved = self.router.load_moved
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(moved.wait(), self.interval_s)
            woken = moved.is_set()
            moved.clear()
            try:
                if await self.publish_once() and woken:
                    self.woken()
            except Exception:  # noqa: BLE001 - the next tick tries again; the load is only a TTL old at worst
                log.exception("publishing this gateway's load failed")

    async def withdraw(self) -> None:
        """A clean stop: this gateway's load goes at once rather than at its TTL."""
        await asyncio.to_thread(self.board.publish, self.gateway_id, {}, self.ttl_s)
        self._last = {}
