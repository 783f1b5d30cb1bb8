"""Price arithmetic in integer nanodollars. Pure functions: no I/O, easy to reason about."""

from __future__ import annotations

from dataclasses import dataclass

from yun.errors import InvalidRequest

__all__ = ["NANO", "Charge", "charge", "dollars", "nanodollars", "per_mtok"]

NANO = 1_000_000_000
"""Nanodollars per dollar."""


def nanodollars(usd: float | str) -> int:
    """Dollars (as typed by an operator) to integer nanodollars, rounded to the nearest."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(str(usd))
    except InvalidOperation as exc:
        raise InvalidRequest(f"not an amount of dollars: {usd!r}", param="amount") from exc
    if not value.is_finite():
        raise InvalidRequest(f"not an amount of dollars: {usd!r}", param="amount")
    return int((value * NANO).to_integral_value())


def dollars(nanos: int) -> float:
    return nanos / NANO


def per_mtok(tokens: int, price_per_mtok: int) -> int:
    """Cost of `tokens` at a price per million tokens, rounded up: we never under-hold."""
    return -(-tokens * price_per_mtok // 1_000_000)


@dataclass(frozen=True)
class Charge:
    input_cost: int
    cached_input_cost: int
    output_cost: int
    free_tokens: int

    @property
    def total(self) -> int:
        return self.input_cost + self.cached_input_cost + self.output_cost


def charge(
    prices: tuple[int, int, int] | None,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    free_available: int,
) -> Charge:
    """What a request costs. `prices` = (input, output, cached input) per 1M tokens, or None if unpriced.

    Free tokens cover the most expensive tokens first (output, then uncached input, then cached input),
    which is what a customer would choose; the same rule sizes the hold, so the hold always covers the charge.
    """
    cached = min(cached_tokens, prompt_tokens)
    uncached = prompt_tokens - cached
    free = min(free_available, prompt_tokens + completion_tokens)
    if prices is None:
        return Charge(0, 0, 0, free)
    input_p, output_p, cached_p = prices
    left = free
    out_free = min(left, completion_tokens)
    left -= out_free
    in_free = min(left, uncached)
    left -= in_free
    cached_free = min(left, cached)
    return Charge(
        input_cost=per_mtok(uncached - in_free, input_p),
        cached_input_cost=per_mtok(cached - cached_free, cached_p),
        output_cost=per_mtok(completion_tokens - out_free, output_p),
        free_tokens=free,
    )
