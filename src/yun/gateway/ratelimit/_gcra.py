"""GCRA arithmetic shared by both stores (the Redis Lua script mirrors `try_admit` and `adjusted`).

Each limit of each scope keeps one number, its theoretical arrival time (TAT): the moment at which
the bucket would be empty again if nothing more arrived. A limit of `L` per minute refills one unit
every `60 / L` seconds, so a request costing `n` units moves the TAT to `max(TAT, now) + n * 60 / L`,
and it fits iff that lands at most one window (60 s) ahead of now: capacity `L`, smooth refill,
O(1) state. A TAT at or before now means the bucket is full; an unknown scope is full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from yun.gateway.ratelimit.decision import Decision, Limits, LimitStatus, Reason

WINDOW_S = 60.0
# Float slack: fifty requests of 1.2 s each must fill a 60 s window exactly, not overflow it by 1e-14.
EPSILON_S = 1e-6
EMPTY = -math.inf

Scopes = Sequence[tuple[str, Limits]]
Tats = tuple[float, float]
"""(requests TAT, tokens TAT) of one scope."""


def step(limit: int, units: float) -> float:
    """Seconds of window that `units` occupy. Written as in the Lua script so both round alike."""
    return units * (WINDOW_S / limit)


def try_admit(now: float, scopes: Scopes, tokens: int, tats: Sequence[Tats]) -> list[Tats] | None:
    """The TATs after admitting one request of `tokens` in every scope, or None if any limit refuses."""
    new: list[Tats] = []
    for (_, limits), (tat_r, tat_t) in zip(scopes, tats, strict=True):
        if limits.rpm is not None:
            tat_r = max(tat_r, now) + step(limits.rpm, 1)
            if tat_r - now > WINDOW_S + EPSILON_S:
                return None
        if limits.tpm is not None:
            tat_t = max(tat_t, now) + step(limits.tpm, tokens)
            if tokens > limits.tpm or tat_t - now > WINDOW_S + EPSILON_S:
                return None
        new.append((tat_r, tat_t))
    return new


def adjusted(now: float, tpm: int, tat_t: float, token_delta: int) -> float:
    """The tokens TAT after correcting the estimate by `token_delta`; never below an empty bucket.

    A positive delta may push the TAT beyond one window: the scope is then in debt and refuses until
    the overrun has drained, which is what the tokens actually used cost.
    """
    return max(max(tat_t, now) + step(tpm, token_delta), now)


def admitted(now: float, scopes: Scopes, tats: Sequence[Tats]) -> Decision:
    """The decision for an admitted request, given the TATs after counting it."""
    return Decision(allowed=True, requests=_status(now, scopes, tats, 0), tokens=_status(now, scopes, tats, 1))


def refused(now: float, scopes: Scopes, tokens: int, tats: Sequence[Tats]) -> Decision:
    """The decision for a refused request, given the untouched TATs: which limit, and how long to wait."""
    # Defaults only matter if float rounding made the Lua script and this code disagree at the margin.
    wait, where = EPSILON_S, scopes[0][0]
    reason: Reason = "rpm"
    for (scope, limits), (tat_r, tat_t) in zip(scopes, tats, strict=True):
        if limits.tpm is not None and tokens > limits.tpm:
            wait, reason, where = math.inf, "tokens_exceed_limit", scope
            break
        checks: tuple[tuple[int | None, float, int, Reason], ...] = (
            (limits.rpm, tat_r, 1, "rpm"),
            (limits.tpm, tat_t, tokens, "tpm"),
        )
        for limit, tat, units, name in checks:
            if limit is None:
                continue
            # Everything refills at a fixed rate, so once the longest wait has passed all limits fit.
            need = max(tat, now) + step(limit, units) - now - WINDOW_S
            if need > wait:
                wait, reason, where = need, name, scope
    return Decision(
        allowed=False,
        retry_after_s=wait,
        reason=reason,
        scope=where,
        requests=_status(now, scopes, tats, 0),
        tokens=_status(now, scopes, tats, 1),
    )


def _status(now: float, scopes: Scopes, tats: Sequence[Tats], which: int) -> LimitStatus | None:
    """The most constraining scope's view of one limit (0 = requests, 1 = tokens): lowest remaining."""
    best: LimitStatus | None = None
    for (_, limits), pair in zip(scopes, tats, strict=True):
        limit = limits.rpm if which == 0 else limits.tpm
        if limit is None:
            continue
        backlog = max(0.0, pair[which] - now)
        remaining = math.floor((WINDOW_S - backlog) * limit / WINDOW_S + 1e-6)
        status = LimitStatus(limit=limit, remaining=min(limit, max(0, remaining)), reset_s=backlog)
        if best is None or (status.remaining, -status.reset_s) < (best.remaining, -best.reset_s):
            best = status
    return best
