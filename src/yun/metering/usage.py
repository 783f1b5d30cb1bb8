"""Usage and spend for one organization.

Totals come from the daily rollups only (one row per model and UTC day, kept exact by the settling
transaction), so a query over a quarter reads a few hundred rows however many requests were made.
Raw usage records are only ever read a page at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from yun.store.money import MoneyRepository

__all__ = ["MAX_PAGE", "UsageQueries", "UsageSummaryRow", "format_usd"]

_NANO = 1_000_000_000
MAX_PAGE = 1000
"""Most usage records one page may hold."""

_GROUP_COLUMN = {"model": "model_id", "day": "day"}

# Public fields of a usage record: `replica` names our machines, not the tenant's business.
_RECORD_FIELDS = (
    "request_id",
    "key_id",
    "model_id",
    "endpoint",
    "status",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "free_tokens",
    "price_version",
    "latency_ms",
    "ttft_ms",
    "compute_seconds",
    "training_tokens",
)


def format_usd(nanodollars: int) -> str:
    """Exact dollars with 9 decimals ("-0.000000001"): money never passes through a float."""
    sign = "-" if nanodollars < 0 else ""
    whole, frac = divmod(abs(nanodollars), _NANO)
    return f"{sign}{whole}.{frac:09d}"


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything Yun stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class UsageSummaryRow:
    """Totals for one model or one UTC day. Costs are nanodollars actually charged (free tokens cost 0)."""

    key: str
    """The model id (group_by="model") or the day as YYYY-MM-DD (group_by="day")."""
    requests: int
    """Inference requests (a job's training and a deployment's compute are not requests)."""
    prompt_tokens: int
    """All input tokens, cached ones included (of inference: tokens trained on are `training_tokens`)."""
    cached_tokens: int
    completion_tokens: int
    free_tokens: int
    """Tokens covered by the free tier, of any kind."""
    input_cost: int
    cached_input_cost: int
    output_cost: int
    cost: int
    """Everything charged: tokens, training and dedicated compute."""
    compute_seconds: int = 0
    """Replica-seconds of the org's dedicated deployments (billed as usage records of endpoint `compute`)."""
    compute_cost: int = 0
    training_tokens: int = 0
    """Tokens the org's fine-tuning jobs trained on (usage records of endpoint `fine_tuning`), by base model."""
    training_cost: int = 0

    @property
    def input_tokens(self) -> int:
        """Uncached input tokens: the ones billed at the input price."""
        return self.prompt_tokens - self.cached_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_tokens": self.input_tokens, "cost_usd": format_usd(self.cost)}


class UsageQueries:
    """Read-only usage and spend queries for one organization at a time."""

    def __init__(self, money: MoneyRepository) -> None:
        self._money = money

    def summary(
        self, org_id: str, first_day: date, last_day: date, group_by: Literal["model", "day"] = "model"
    ) -> list[UsageSummaryRow]:
        """Totals per model or per day for the UTC days first_day..last_day, both included (so a query
        ending today shows today), ordered by key; days and models without usage are absent. Reads rollups
        only, never usage records."""
        if isinstance(first_day, datetime) or isinstance(last_day, datetime):
            # A datetime is a date too, but its isoformat would not compare with YYYY-MM-DD days.
            raise ValueError("first_day and last_day are dates (UTC days), not datetimes")
        if last_day < first_day:
            raise ValueError("last_day is before first_day")
        column = _GROUP_COLUMN.get(group_by)
        if column is None:
            raise ValueError(f"group_by must be 'model' or 'day', not {group_by!r}")
        rows = self._money.rollup_sums(org_id, first_day.isoformat(), last_day.isoformat(), column)
        return [
            UsageSummaryRow(
                key=r[column],
                requests=r["requests"],
                prompt_tokens=r["prompt_tokens"],
                cached_tokens=r["cached_tokens"],
                completion_tokens=r["completion_tokens"],
                free_tokens=r["free_tokens"],
                input_cost=r["input_cost"],
                cached_input_cost=r["cached_input_cost"],
                output_cost=r["output_cost"],
                cost=r["cost"],
                compute_seconds=r["compute_seconds"],
                compute_cost=r["compute_cost"],
                training_tokens=r["training_tokens"],
                training_cost=r["training_cost"],
            )
            for r in rows
        ]

    def records(self, org_id: str, limit: int = 100, after: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """One page of the org's usage records, newest first, and whether more follow. For the next page
        pass the last record's `request_id` as `after` (NotFound if it is not one of the org's records)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        rows = self._money.usage_records(org_id, limit=limit + 1, after=after)
        return [
            {
                **{k: r[k] for k in _RECORD_FIELDS},
                "cost_nanodollars": int(r["cost"]),
                "cost_usd": format_usd(int(r["cost"])),
                "created_at": _utc(r["created_at"]).isoformat(),
            }
            for r in rows[:limit]
        ], len(rows) > limit
