"""In-process rate limits: exact for one gateway process, shared by all its tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from yun.gateway.ratelimit import _gcra
from yun.gateway.ratelimit.base import check_scopes
from yun.gateway.ratelimit.decision import Decision, Limits

__all__ = ["MemoryRateLimitStore"]

# Forget full buckets every this many calls, so keys that stopped calling do not pile up forever.
_SWEEP_EVERY = 4096


class MemoryRateLimitStore:
    """A dict of TATs per scope on the monotonic clock.

    Atomic under asyncio because check-and-count never awaits; the lock only matters if a caller
    uses the store from worker threads too, and costs well under a microsecond uncontended.
    """

    def __init__(self) -> None:
        self._tats: dict[str, _gcra.Tats] = {}
        self._lock = threading.Lock()
        self._calls = 0

    async def acquire(self, scopes: Sequence[tuple[str, Limits]], tokens: int, now: float | None = None) -> Decision:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        limited = check_scopes(scopes)
        if not limited:
            return Decision(allowed=True)
        now = time.monotonic() if now is None else now
        empty = (_gcra.EMPTY, _gcra.EMPTY)
        with self._lock:
            tats = [self._tats.get(name, empty) for name, _ in limited]
            new = _gcra.try_admit(now, limited, tokens, tats)
            if new is not None:
                self._tats.update(zip((name for name, _ in limited), new, strict=True))
            self._calls += 1
            if self._calls % _SWEEP_EVERY == 0:
                self._sweep(now)
        if new is None:
            return _gcra.refused(now, limited, tokens, tats)
        return _gcra.admitted(now, limited, new)

    async def adjust(self, scopes: Sequence[tuple[str, Limits]], token_delta: int, now: float | None = None) -> None:
        limited = [(name, limits.tpm) for name, limits in check_scopes(scopes) if limits.tpm is not None]
        if token_delta == 0 or not limited:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            for name, tpm in limited:
                tat_r, tat_t = self._tats.get(name, (_gcra.EMPTY, _gcra.EMPTY))
                self._tats[name] = (tat_r, _gcra.adjusted(now, tpm, tat_t, token_delta))

    async def aclose(self) -> None:
        with self._lock:
            self._tats.clear()

    def _sweep(self, now: float) -> None:
        # A TAT at or before now is a full bucket, the same as no entry at all.
        self._tats = {name: tats for name, tats in self._tats.items() if max(tats) > now}
