"""The `RateLimitStore` seam: one small protocol, two real backends (memory.py, redis.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from yun.errors import YunError
from yun.gateway.ratelimit.decision import Decision, Limits

__all__ = ["RateLimitBackendError", "RateLimitStore", "check_scopes"]


class RateLimitBackendError(YunError):
    """The rate-limit backend (Redis) cannot be reached or failed.

    Not a client error: the caller chooses whether to fail open (admit unmetered) or closed (refuse).
    """

    code = "rate_limit_backend_unavailable"


class RateLimitStore(Protocol):
    """Requests-per-minute and tokens-per-minute limits over named scopes ("key:<id>", "org:<id>").

    Each limit is a bucket holding one minute's allowance that refills smoothly (GCRA), so a client
    may burst up to the limit and then proceeds at limit/60 per second.
    """

    async def acquire(self, scopes: Sequence[tuple[str, Limits]], tokens: int, now: float | None = None) -> Decision:
        """Admit one request of `tokens` estimated tokens, or refuse it, atomically across all scopes.

        Admitted: one request and `tokens` tokens are counted in every scope. Refused: nothing is counted
        anywhere, so an org that is out of tokens never eats into its keys' allowance. Concurrent callers
        (tasks, or gateway processes sharing Redis) can never both take the last slot.

        `now` is seconds on the backend's own clock (monotonic in memory, Redis server time); leave it
        None except in tests, which use it to step time without sleeping.
        """
        ...

    async def adjust(self, scopes: Sequence[tuple[str, Limits]], token_delta: int, now: float | None = None) -> None:
        """Correct the tokens counted by `acquire` once the actual usage is known (actual - estimated).

        A negative delta gives tokens back (never beyond an empty bucket); a positive one may put the
        scope in debt, refusing further requests until the overrun has drained.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...


def check_scopes(scopes: Sequence[tuple[str, Limits]]) -> list[tuple[str, Limits]]:
    """The scopes that set any limit; a scope named twice would be checked against itself, so refuse it."""
    names = [name for name, _ in scopes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate rate-limit scope in {names}")
    return [(name, limits) for name, limits in scopes if not limits.unlimited]
