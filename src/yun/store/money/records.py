"""The money path's records: what a hold asks for and is, what progress and a settlement write, prices.

Amounts are integers in nanodollars (1e-9 USD) everywhere: money is never a float.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "BACKGROUND_ENDPOINTS",
    "COMPUTE_ENDPOINT",
    "INT64_MAX",
    "MAX_FREE_TOKENS",
    "MAX_PRICE_PER_MTOK",
    "POSTING_KINDS",
    "ROLLUP_SUMS",
    "ComputeBill",
    "HoldRecord",
    "HoldRequest",
    "PeriodFigures",
    "PriceRecord",
    "ProgressRecord",
    "ResponseWrite",
    "SettleRecord",
    "StaleComputeBill",
    "TRAINING_ENDPOINT",
    "compute_holder",
    "quota_message",
    "training_holder",
]

POSTING_KINDS = ("grant", "topup", "refund", "adjustment")

COMPUTE_ENDPOINT = "compute"
"""The endpoint of a dedicated deployment's compute holds and of the usage records that bill its
replica-seconds. Those holds are the compute biller's (billing/compute.py), which settles them against
metered intervals: gateway crash recovery never touches them."""


TRAINING_ENDPOINT = "fine_tuning"
"""The endpoint of a fine-tuning job's hold and of the usage record that bills its trained tokens. The
job machinery settles it when the job ends (yun.jobs.fine_tuning): gateway crash recovery never touches
it, so a job interrupted by a crash is resumed or failed, and billed once, by its own runner."""

BACKGROUND_ENDPOINTS = (COMPUTE_ENDPOINT, TRAINING_ENDPOINT)
"""Holds that belong to long-lived work, not to a gateway's request: crash recovery leaves them alone."""


def training_holder(job_id: str) -> str:
    """The owner written on a fine-tuning job's hold (`reservations.gateway_id`): the job."""
    return f"job:{job_id}"


def compute_holder(deployment_id: str) -> str:
    """The owner written on a deployment's compute holds (`reservations.gateway_id`): the deployment,
    not a gateway, so its holds are found again after any crash."""
    return f"compute:{deployment_id}"


INT64_MAX = 2**63 - 1
"""The largest amount a money column (BIGINT) holds, in nanodollars (~$9.2e9). A balance never passes
it: on SQLite an integer past it silently becomes a float, no longer equal to the ledger's sum."""
MAX_PRICE_PER_MTOK = 10**15
"""Highest price per 1M tokens, in nanodollars ($1M): a hold of a billion tokens still fits in BIGINT."""
MAX_FREE_TOKENS = 10**12
"""Largest monthly free-token allowance per model: used + held + grant never overflows BIGINT."""

ROLLUP_SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "free_tokens",
    "input_cost",
    "cached_input_cost",
    "output_cost",
    "cost",
    "compute_seconds",
    "compute_cost",
    "training_tokens",
    "training_cost",
)


def _usd(nanodollars: int) -> str:
    """$1.50, $0.0068, $0.000004: cents always, further digits only as many as the amount has."""
    whole, frac = divmod(abs(nanodollars), 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0").ljust(2, "0")
    return f"{'-' if nanodollars < 0 else ''}${whole:,}.{digits}"


def quota_message(req: HoldRequest, needed: int, balance: int, held: int) -> str:
    """What a refused hold tells the tenant: what it needed, what was available, how to need less."""
    available = balance - held
    in_flight = f", {_usd(held)} of it held by requests and jobs in flight" if held else ""
    if req.endpoint == COMPUTE_ENDPOINT:
        return (
            f"You exceeded your current quota: the dedicated compute needs a hold of {_usd(needed)} for its next "
            f"billing interval, but the organization has {_usd(available)} available (balance {_usd(balance)}"
            f"{in_flight}). Add credits, or run fewer dedicated replicas."
        )
    if req.endpoint == TRAINING_ENDPOINT:
        return (
            f"You exceeded your current quota: this fine-tuning job needs a hold of {_usd(needed)} "
            f"({req.prompt_tokens:,} training tokens: the file's tokens x epochs), but the organization has "
            f"{_usd(available)} available (balance {_usd(balance)}{in_flight}). Add credits, or train fewer "
            "tokens: fewer epochs (n_epochs) or a smaller training file."
        )
    tokens = (
        f" (its maximum cost: {req.prompt_tokens:,} prompt tokens + max_tokens {req.max_output_tokens:,})"
        if req.prompt_tokens or req.max_output_tokens
        else ""
    )
    in_flight = f", {_usd(held)} of it held by requests in flight" if held else ""
    return (
        f"You exceeded your current quota: this request needs a hold of {_usd(needed)}{tokens}, but the "
        f"organization has {_usd(available)} available (balance {_usd(balance)}{in_flight}). Add credits, or "
        "lower the hold: set a smaller max_tokens (without it, the hold is for the whole context left after "
        "the prompt) or shorten the prompt."
    )


@dataclass(frozen=True)
class HoldRequest:
    request_id: str
    org_id: str
    key_id: str
    model_id: str
    endpoint: str
    gateway_id: str
    price_version: int | None
    free_tokens_wanted: int
    free_allowance: int
    month: str
    amount_for: Callable[[int], int]
    """Money to hold given how many free tokens were granted."""
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    """The estimate the hold is for (said in a refusal)."""


@dataclass(frozen=True)
class HoldRecord:
    request_id: str
    org_id: str
    key_id: str
    model_id: str
    endpoint: str
    amount: int
    free_tokens: int
    month: str | None
    price_version: int | None
    created_at: datetime
    progress_prompt_tokens: int = 0
    progress_completion_tokens: int = 0
    progress_cached_tokens: int = 0
    """The last progress recorded while the request ran (0 if none): what crash recovery bills."""


@dataclass(frozen=True)
class ResponseWrite:
    """A Responses API answer to store (`store: true`; store/responses.py), written by the request path's
    group commit beside the holds and settlements: no thread hop and no transaction of its own."""

    id: str
    org_id: str
    """Its organization (also the batch order, see `MoneyWriter._lock_order`)."""
    previous_response_id: str | None
    model_id: str
    input_items: str
    """JSON text, as the ORM's JSON column stores it."""
    response: str
    """JSON text."""
    created_at: datetime


@dataclass(frozen=True)
class ProgressRecord:
    """Tokens an open request has generated so far, by the engine's own running count."""

    request_id: str
    org_id: str
    """The hold's organization: batches run in organization order (see `MoneyWriter._lock_order`)."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Of `prompt_tokens`, those the engine served from its prompt cache (priced as cached input)."""


@dataclass(frozen=True)
class ComputeBill:
    """The metered intervals of one dedicated deployment a settlement charges: every interval of it not
    billed yet with an id in [first_id, last_id] (`intervals` of them, checked), in the same transaction."""

    deployment_id: str
    first_id: int
    last_id: int
    intervals: int
    seconds: int
    cost: int
    """The sum of the intervals' prices, in nanodollars."""


class StaleComputeBill(Exception):
    """The intervals a compute settlement names are not the ones left to bill (billed meanwhile): the
    settlement is rolled back, and the next billing pass reads them again."""


@dataclass(frozen=True)
class SettleRecord:
    replica: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    free_tokens: int
    status: str
    latency_ms: int
    ttft_ms: int | None
    input_cost: int
    cached_input_cost: int
    output_cost: int
    internal: bool = False
    """The platform operator's own use: charged at list price and covered by an `internal` ledger entry of
    the same amount in the same transaction, so the balance does not move (see BillingService)."""
    training_tokens: int = 0
    """For a fine-tuning job's hold: the tokens its completed steps trained on (never input tokens)."""
    training_cost: int = 0
    """What those trained tokens cost, in nanodollars."""
    compute: ComputeBill | None = None
    """For a compute hold: the replica-seconds it charges. Their cost may pass the hold (a replica placed
    after the hold was sized, a billing pass that ran late): what passes it is charged from the balance
    left available, guarded like a hold, or the settlement is refused and nothing is written."""

    @property
    def cost(self) -> int:
        compute = 0 if self.compute is None else self.compute.cost
        return self.input_cost + self.cached_input_cost + self.output_cost + self.training_cost + compute


@dataclass(frozen=True)
class PriceRecord:
    model_id: str
    version: int
    input_per_mtok: int
    output_per_mtok: int
    cached_input_per_mtok: int
    created_at: datetime
    training_per_mtok: int | None = None
    """Per 1M trained tokens (fine-tuning); None: not offered for money."""


@dataclass(frozen=True)
class PeriodFigures:
    usage: list[dict[str, Any]]
    """Rollup totals per model (`model_id` plus the rollup sums), ordered by model."""
    opening_balance: int
    """Sum of the ledger before the period."""
    ledger_during: dict[str, int]
    """Sum of ledger amounts per kind within the period (signed: charges are negative)."""
