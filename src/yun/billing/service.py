"""The money path of every request: hold the maximum cost before the engine runs, settle the real cost after.

A hold is written durably before any compute is spent, so a crash at any later moment leaves an open
reservation that `recover()` settles at the next start: nothing is lost, nothing is billed twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from yun.billing.pricing import charge, dollars, nanodollars
from yun.errors import InvalidRequest
from yun.store import Database
from yun.store.money import HoldRecord, HoldRequest, MoneyRepository, PriceRecord, SettleRecord

__all__ = ["BillingService", "Estimate", "Outcome"]

log = logging.getLogger("yun.billing")

T = TypeVar("T")

_CACHE_TTL_S = 2.0
CREDIT_KINDS = ("grant", "topup", "refund", "adjustment")
DEFAULT_ORG_ALLOWANCE = "*"


def _log_failed_write(done: Future[bool]) -> None:
    if done.exception() is not None:
        log.error("releasing an unused hold failed (stale-hold recovery will)", exc_info=done.exception())


@dataclass(frozen=True)
class Estimate:
    """Upper bounds known before the engine runs."""

    prompt_tokens: int
    max_output_tokens: int


@dataclass(frozen=True)
class Outcome:
    """What actually happened, in the engine's own counts."""

    replica: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    status: str
    latency_s: float
    ttft_s: float | None


class BillingService:
    def __init__(self, db: Database, gateway_id: str) -> None:
        self.money = MoneyRepository(db)
        self.gateway_id = gateway_id
        self._prices: dict[str, PriceRecord] = {}
        self._allowances: dict[tuple[str, str], int] = {}
        self._versions: dict[tuple[str, int], PriceRecord] = {}
        self._loaded_at = -1e9

    # -- cached reference data (refreshed every couple of seconds: prices are versioned, so a request
    #    keeps the version it was held at even if a new one lands meanwhile) ------------------------
    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._loaded_at > _CACHE_TTL_S:
            self._prices = self.money.prices()
            self._allowances = self.money.free_allowances()
            self._loaded_at = now

    def invalidate(self) -> None:
        self._loaded_at = -1e9

    def allowance(self, org_id: str, model_id: str) -> int:
        self._refresh()
        own = self._allowances.get((org_id, model_id))
        return own if own is not None else self._allowances.get((DEFAULT_ORG_ALLOWANCE, model_id), 0)

    def _price_version(self, model_id: str, version: int) -> PriceRecord | None:
        # A price version never changes once written, so it is cached for good.
        key = (model_id, version)
        if key not in self._versions:
            found = self.money.price(model_id, version)
            if found is None:
                return None
            self._versions[key] = found
        return self._versions[key]

    def price(self, model_id: str) -> PriceRecord | None:
        self._refresh()
        return self._prices.get(model_id)

    # -- the request path ----------------------------------------------------------------------
    def _hold_request(
        self, request_id: str, org_id: str, key_id: str, model_id: str, endpoint: str, est: Estimate
    ) -> HoldRequest:
        price = self.price(model_id)
        triple = None if price is None else (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok)

        def amount_for(free: int) -> int:
            # No cached tokens assumed: cached input is never dearer than input, so this is an upper bound.
            return charge(triple, est.prompt_tokens, 0, est.max_output_tokens, free).total

        return HoldRequest(
            request_id=request_id,
            org_id=org_id,
            key_id=key_id,
            model_id=model_id,
            endpoint=endpoint,
            gateway_id=self.gateway_id,
            price_version=None if price is None else price.version,
            free_tokens_wanted=est.prompt_tokens + est.max_output_tokens,
            free_allowance=self.allowance(org_id, model_id),
            month=datetime.now(UTC).strftime("%Y-%m"),
            amount_for=amount_for,
        )

    async def reserve(
        self, request_id: str, org_id: str, key_id: str, model_id: str, endpoint: str, est: Estimate
    ) -> HoldRecord:
        """Hold the request's maximum cost or raise QuotaExceeded, before any compute is spent."""
        written = self.money.writer.reserve(self._hold_request(request_id, org_id, key_id, model_id, endpoint, est))
        try:
            return await asyncio.shield(self.money.writer.wait(written))
        except asyncio.CancelledError:
            # The caller left (client gone) while the hold was being written: nobody will use it, so
            # release it as soon as it lands instead of leaving it to stale-hold recovery.
            written.add_done_callback(self._release_unused)
            raise

    def reserve_now(
        self, request_id: str, org_id: str, key_id: str, model_id: str, endpoint: str, est: Estimate
    ) -> HoldRecord:
        """`reserve`, blocking (outside an event loop: tools, tests)."""
        return self.money.reserve(self._hold_request(request_id, org_id, key_id, model_id, endpoint, est))

    def _release_unused(self, written: Future[HoldRecord]) -> None:
        if written.exception() is None:
            _, done = self.settle(written.result(), Outcome("", 0, 0, 0, "aborted", 0.0, None))
            done.add_done_callback(_log_failed_write)

    def settlement(self, hold: HoldRecord, out: Outcome) -> SettleRecord:
        """The charge for what happened, at the price version the request was held at."""
        price = None if hold.price_version is None else self._price_version(hold.model_id, hold.price_version)
        triple = None if price is None else (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok)
        c = charge(triple, out.prompt_tokens, out.cached_tokens, out.completion_tokens, hold.free_tokens)
        input_cost, cached_cost, output_cost = c.input_cost, c.cached_input_cost, c.output_cost
        if c.total > hold.amount:
            # Cannot happen while estimates are upper bounds; if it does, the balance invariant wins and
            # the difference is logged for an operator rather than overdrawing the tenant.
            log.error(
                "request %s cost %d exceeds its hold %d; charging the hold", hold.request_id, c.total, hold.amount
            )
            scale = hold.amount / c.total
            input_cost, cached_cost = int(input_cost * scale), int(cached_cost * scale)
            output_cost = hold.amount - input_cost - cached_cost
        return SettleRecord(
            replica=out.replica,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            cached_tokens=out.cached_tokens,
            free_tokens=c.free_tokens,
            status=out.status,
            latency_ms=int(out.latency_s * 1000),
            ttft_ms=None if out.ttft_s is None else int(out.ttft_s * 1000),
            input_cost=input_cost,
            cached_input_cost=cached_cost,
            output_cost=output_cost,
        )

    def settle(self, hold: HoldRecord, out: Outcome) -> tuple[int, Future[bool]]:
        """Queue the settlement; returns its cost (nanodollars) and a future that completes once it is
        committed (True) or found already settled (False). Once queued it is written whatever the
        caller does next."""
        rec = self.settlement(hold, out)
        return rec.cost, self.money.writer.settle(hold, rec)

    def written(self, future: Future[T]) -> asyncio.Future[T]:
        """Await one of `settle`'s futures on the running loop (the cheapest way there, see MoneyWriter.wait)."""
        return self.money.writer.wait(future)

    def settle_now(self, hold: HoldRecord, out: Outcome) -> tuple[bool, int]:
        """Settle once, blocking; returns (settled by this call, cost in nanodollars)."""
        cost, done = self.settle(hold, out)
        return done.result(), cost

    # -- credits, prices, free tier (admin; off the request path) ---------------------------------
    def credit(
        self, org_id: str, usd: str | float, kind: str = "grant", reference: str | None = None, note: str | None = None
    ) -> bool:
        """Post credits (or, with a negative adjustment, a debit) to the ledger. Idempotent per reference."""
        if kind not in CREDIT_KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(CREDIT_KINDS)}", param="kind")
        amount = nanodollars(usd)
        if kind != "adjustment" and amount <= 0:
            raise InvalidRequest("amount must be positive", param="amount")
        if amount == 0:
            raise InvalidRequest("amount must not be zero", param="amount")
        return self.money.post(org_id, kind, amount, reference or f"{kind}-{uuid.uuid4().hex}", note)

    def set_price(
        self,
        model_id: str,
        input_usd: str | float,
        output_usd: str | float,
        cached_input_usd: str | float | None = None,
    ) -> PriceRecord:
        """Add a price version (USD per 1M tokens). Requests already held keep the version they held at."""
        values = [nanodollars(input_usd), nanodollars(output_usd)]
        cached = values[0] if cached_input_usd is None else nanodollars(cached_input_usd)
        if min(*values, cached) < 0:
            raise InvalidRequest("prices cannot be negative", param="price")
        if cached > values[0]:
            # Holds assume cached input never costs more than input (see Estimate); keep that true.
            raise InvalidRequest("cached input cannot cost more than input", param="cached_input")
        price = self.money.add_price(model_id, values[0], values[1], cached)
        self.invalidate()
        return price

    def set_free_allowance(self, org_id: str, model_id: str, monthly_tokens: int) -> None:
        if monthly_tokens < 0:
            raise InvalidRequest("monthly_tokens cannot be negative", param="monthly_tokens")
        self.money.set_free_allowance(org_id, model_id, monthly_tokens)
        self.invalidate()

    def balance(self, org_id: str) -> dict[str, float | int]:
        balance, held = self.money.balance(org_id)
        return {
            "balance": dollars(balance),
            "held": dollars(held),
            "available": dollars(balance - held),
            "balance_nanodollars": balance,
            "held_nanodollars": held,
        }

    # -- crash recovery ------------------------------------------------------------------------
    def recover(self, *, stale_after_s: float | None = None) -> int:
        """Settle reservations left open by a crash of this gateway (or, with `stale_after_s`, by any
        gateway that has been gone that long). The engine's counts died with the request, so they are
        settled as `interrupted` at zero tokens: the tenant is never billed for an answer nobody got."""
        if stale_after_s is None:
            holds = self.money.open_holds(gateway_id=self.gateway_id)
        else:
            holds = self.money.open_holds(older_than=datetime.now(UTC) - timedelta(seconds=stale_after_s))
        settled = 0
        for hold in holds:
            done, _ = self.settle_now(hold, Outcome("", 0, 0, 0, "interrupted", 0.0, None))
            settled += done
        if settled:
            log.warning("settled %d reservation(s) left open by an interrupted gateway", settled)
        return settled
