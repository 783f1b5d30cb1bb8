"""What a rate-limit check takes (`Limits`) and what it answers (`Decision`, with OpenAI's headers)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["Decision", "LimitStatus", "Limits", "Reason", "format_reset"]

Reason = Literal["rpm", "tpm", "tokens_exceed_limit"]
"""Why a request was refused: out of requests, out of tokens, or asking for more tokens than the
whole per-minute budget (retrying can never help, so no `Retry-After` is offered)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits of one scope (an API key, an organization). `None` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        # A zero limit would mean "blocked": that is revocation's job, not the rate limiter's.
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limit as OpenAI reports it: the limit, what is left, and seconds until fully refilled."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to `RateLimitStore.acquire`.

    `requests` and `tokens` describe the most constraining scope for each limit (lowest remaining),
    after counting this request if it was admitted, or as things stand if it was refused. They are
    `None` when no scope sets that limit.
    """

    allowed: bool
    retry_after_s: float = 0.0
    reason: Reason | None = None
    scope: str | None = None
    """The scope that refused the request (e.g. "org:xyz"), so the error can say which limit was hit."""
    requests: LimitStatus | None = None
    tokens: LimitStatus | None = None

    def headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the limits that are set, plus `Retry-After` when a retry can help."""
        out: dict[str, str] = {}
        for kind, status in (("requests", self.requests), ("tokens", self.tokens)):
            if status is not None:
                out[f"x-ratelimit-limit-{kind}"] = str(status.limit)
                out[f"x-ratelimit-remaining-{kind}"] = str(status.remaining)
                out[f"x-ratelimit-reset-{kind}"] = format_reset(status.reset_s)
        if not self.allowed and self.reason != "tokens_exceed_limit":
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        elif self.reason == "tokens_exceed_limit":
            # Larger than the limit itself: waiting never helps. The OpenAI SDKs obey this header and do
            # not retry (a 429 alone they retry, over and over).
            out["x-should-retry"] = "false"
        return out


def format_reset(seconds: float) -> str:
    """Format a duration as OpenAI does (Go's `time.Duration`): "20ms", "1s", "8.64s", "6m0s", "1h0m0s".

    Rounded up to the millisecond, so a client that waits exactly this long is never early.
    """
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    sec = f"{secs}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{sec}"
    if minutes:
        return f"{minutes}m{sec}"
    return sec
