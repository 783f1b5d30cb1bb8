"""Fine-tuning billed by trained tokens, through the money path requests take.

A job holds its maximum cost before it starts: the training file's tokens x epochs at the base model's
training price (the price version current when the job was created, kept for the job's life). When it
ends it is settled with the tokens its completed steps trained on, at that version: a cancelled or failed
job pays for the steps it completed, never more than it held. The hold belongs to the job
(`training_holder`), not to a gateway, so gateway crash recovery leaves it to the job's runner, which
settles it exactly once whatever happened (store/money: a hold is settled once or not at all).

The platform operator's own organizations hold nothing and their training is covered by `internal`
ledger entries, as their requests are. The free tier covers inference only: training is always charged.

Apart from the bill, each run of a job records the compute it held (`record_run`): for unit economics,
what training cost the operator, at the cost price of the trainer's resource shape, on the days it ran.
The organization pays by tokens, not by these seconds (as for shared inference).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from yun.billing.pricing import per_mtok
from yun.billing.service import BillingService
from yun.metering.compute import training_run
from yun.store.compute import TrainingCompute
from yun.store.money import TRAINING_ENDPOINT, HoldRecord, HoldRequest, PriceRecord, SettleRecord, training_holder

__all__ = ["TrainingBilling", "TrainingRun"]


@dataclass(frozen=True)
class TrainingRun:
    """One run of a job: the trainer placed with `cpus`/`gpus` (its shape) from `started_at` to `ended_at`."""

    job_id: str
    run: int
    """The job's attempt number."""
    org_id: str
    model_id: str
    """The base model."""
    shape: str
    cpus: float
    gpus: float
    started_at: datetime
    ended_at: datetime


class TrainingBilling:
    def __init__(self, billing: BillingService) -> None:
        self.billing = billing

    def price(self, model_id: str) -> PriceRecord | None:
        return self.billing.price(model_id)

    def cost(self, model_id: str, price_version: int | None, tokens: int) -> int:
        """What `tokens` trained tokens cost at that price version (0: unpriced, as an unpriced model is free)."""
        price = None if price_version is None else self.billing.money.price(model_id, price_version)
        if price is None or price.training_per_mtok is None:
            return 0
        return per_mtok(tokens, price.training_per_mtok)

    def reserve(self, job_id: str, org_id: str, key_id: str, model_id: str, tokens: int) -> HoldRecord:
        """Hold what training `tokens` costs, or raise QuotaExceeded (blocking: off the event loop)."""
        price = self.billing.price(model_id)
        version = None if price is None else price.version
        amount = 0 if org_id in self.billing.internal_orgs else self.cost(model_id, version, tokens)
        request = HoldRequest(
            request_id=f"ft-{uuid.uuid4().hex}",
            org_id=org_id,
            key_id=key_id,
            model_id=model_id,
            endpoint=TRAINING_ENDPOINT,
            gateway_id=training_holder(job_id),
            price_version=version,
            free_tokens_wanted=0,
            free_allowance=0,
            month=datetime.now(UTC).strftime("%Y-%m"),
            amount_for=lambda _free: amount,
            prompt_tokens=tokens,
        )
        return self.billing.writer.reserve(request).result()

    def hold_of(self, job_id: str) -> HoldRecord | None:
        """The job's hold while it is open (None once settled, or if it never held)."""
        holds = self.billing.money.open_holds(gateway_id=training_holder(job_id))
        return holds[0] if holds else None

    def settle(self, hold: HoldRecord, trained_tokens: int, status: str, seconds: float, runner: str) -> int:
        """Charge the tokens trained (at most what was held for); returns the cost. Exactly once: a hold
        already settled is not settled again (returns 0)."""
        cost = min(self.cost(hold.model_id, hold.price_version, trained_tokens), max(hold.amount, 0))
        internal = hold.org_id in self.billing.internal_orgs
        if internal:
            cost = self.cost(hold.model_id, hold.price_version, trained_tokens)
        record = SettleRecord(
            replica=runner[:120],
            prompt_tokens=0,
            completion_tokens=0,
            cached_tokens=0,
            free_tokens=0,
            status=status,
            latency_ms=int(seconds * 1000),
            ttft_ms=None,
            input_cost=0,
            cached_input_cost=0,
            output_cost=0,
            internal=internal,
            training_tokens=trained_tokens,
            training_cost=cost,
        )
        return cost if self.billing.writer.settle(hold, record).result() else 0

    def record_run(self, run: TrainingRun) -> bool:
        """Record what one run of a job held, at its shape's current cost price (blocking). Once per run:
        False if that run was recorded already (nothing is written again)."""
        template = TrainingCompute(
            run.job_id, run.run, run.org_id, run.model_id, run.shape, run.cpus, run.gpus, run.started_at, run.ended_at
        )
        compute = self.billing.compute
        pieces = training_run(template, run.started_at, run.ended_at, compute.prices().get(run.shape))
        return compute.record_training(pieces, datetime.now(UTC))

    def cpu_seconds(self, job_id: str) -> float:
        """CPU-seconds (wall x CPUs) of every run of the job recorded so far."""
        return float(sum(p.seconds * p.cpus for p in self.billing.compute.training(job_id)))
