"""Requests- and tokens-per-minute limits per API key and per organization.

`MemoryRateLimitStore` for one gateway process, `RedisRateLimitStore` when several gateways must share
limits; both satisfy `RateLimitStore` and pass the same contract tests.
"""

from yun.gateway.ratelimit.base import RateLimitBackendError, RateLimitStore
from yun.gateway.ratelimit.decision import Decision, Limits, LimitStatus
from yun.gateway.ratelimit.memory import MemoryRateLimitStore
from yun.gateway.ratelimit.redis import RedisRateLimitStore

__all__ = [
    "Decision",
    "LimitStatus",
    "Limits",
    "MemoryRateLimitStore",
    "RateLimitBackendError",
    "RateLimitStore",
    "RedisRateLimitStore",
]
