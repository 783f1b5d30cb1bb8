"""Unit economics: what the cloud earned against what its compute cost, per UTC day, per model or per
organization.

- Revenue is what organizations were charged, inference tokens, trained tokens (fine-tuning jobs, on the
  day each job was settled) and dedicated compute, read from the daily rollups (kept in the settling
  transaction, so they equal the `charge` entries of the ledger, day by day). The operator's own
  organizations are left out: each of their charges is covered by an `internal` entry, no money comes in.
- Cost is the operator's compute cost: every metered interval of every replica, shared or dedicated, at
  the cost price of its shape when it was metered (metering/compute.py), on the day it was used; and
  every run of every fine-tuning job, at the cost price of its trainer's shape, on the days it ran.
- By model, a shared deployment's cost is its model's, and a job's training its base model's (as its
  revenue is); by organization, a dedicated deployment's cost is its owner's, and shared compute is the
  operator's own (a row with no organization, `org_id` None). Training compute is shared compute in that
  sense: the organization pays for it by trained tokens, not by the second, as it pays for shared
  inference, so its cost is the operator's row while its revenue is the organization's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from yun.metering import format_usd
from yun.store.compute import ComputeRepository
from yun.store.money import MoneyRepository

__all__ = ["EconomicsRow", "unit_economics"]

By = Literal["model", "org"]
_REVENUE_KEY = {"model": "model_id", "org": "org_id"}
_COST_KEY = {"model": "model_id", "org": "owner_org"}


@dataclass(frozen=True)
class EconomicsRow:
    """One UTC day of one model or organization. Amounts are nanodollars."""

    day: str
    key: str | None
    """The model id, or the organization id (None: shared compute, the operator's)."""
    token_revenue: int
    """Inference tokens charged."""
    compute_revenue: int
    cost: int
    """The operator's compute cost: replicas and training runs."""
    replica_seconds: int
    """All the replica-seconds the cost is for, shared and dedicated."""
    billed_replica_seconds: int
    """Of those, the dedicated ones charged to their owner (on the day they were charged)."""
    training_revenue: int = 0
    """Trained tokens charged (fine-tuning jobs settled that day)."""
    training_cost: int = 0
    """Of `cost`, what fine-tuning runs cost."""
    training_seconds: int = 0
    """Seconds fine-tuning trainers held their shape (each run once), beside `replica_seconds`."""

    @property
    def revenue(self) -> int:
        return self.token_revenue + self.training_revenue + self.compute_revenue

    @property
    def margin(self) -> int:
        return self.revenue - self.cost

    def to_dict(self, by: By) -> dict[str, Any]:
        money = {
            "token_revenue": self.token_revenue,
            "training_revenue": self.training_revenue,
            "compute_revenue": self.compute_revenue,
            "revenue": self.revenue,
            "cost": self.cost,
            "training_cost": self.training_cost,
            "margin": self.margin,
        }
        return {
            "day": self.day,
            "model" if by == "model" else "org_id": self.key,
            **money,
            **{f"{k}_usd": format_usd(v) for k, v in money.items()},
            "replica_seconds": self.replica_seconds,
            "billed_replica_seconds": self.billed_replica_seconds,
            "training_seconds": self.training_seconds,
        }


def unit_economics(
    money: MoneyRepository,
    compute: ComputeRepository,
    first_day: date,
    last_day: date,
    by: By,
    *,
    internal_orgs: frozenset[str] = frozenset(),
) -> list[EconomicsRow]:
    """Revenue against compute cost per UTC day (first_day..last_day, both included) and model or org,
    ordered by day then key; days and keys with neither are absent."""
    if by not in _REVENUE_KEY:
        raise ValueError(f"by must be 'model' or 'org', not {by!r}")
    first, last = first_day.isoformat(), last_day.isoformat()
    rows: dict[tuple[str, str | None], dict[str, int]] = {}
    fields = ("tokens", "training", "compute", "cost", "seconds", "billed", "training_cost", "training_seconds")

    def row(day: str, key: str | None) -> dict[str, int]:
        return rows.setdefault((day, key), dict.fromkeys(fields, 0))

    for r in money.revenue_by_day(first, last, _REVENUE_KEY[by], excluding=internal_orgs):
        into = row(r["day"], r[_REVENUE_KEY[by]])
        into["tokens"] += r["cost"] - r["compute_cost"] - r["training_cost"]
        into["training"] += r["training_cost"]
        into["compute"] += r["compute_cost"]
        into["billed"] += r["compute_seconds"]
    for r in compute.cost_by_day(first, last, _COST_KEY[by]):
        into = row(r["day"], r[_COST_KEY[by]])
        into["cost"] += r["cost"]
        into["seconds"] += r["seconds"]
    for r in compute.training_cost_by_day(first, last):
        into = row(r["day"], r["model_id"] if by == "model" else None)
        into["cost"] += r["cost"]
        into["training_cost"] += r["cost"]
        into["training_seconds"] += r["seconds"]
    return [
        EconomicsRow(
            day,
            key,
            token_revenue=v["tokens"],
            compute_revenue=v["compute"],
            cost=v["cost"],
            replica_seconds=v["seconds"],
            billed_replica_seconds=v["billed"],
            training_revenue=v["training"],
            training_cost=v["training_cost"],
            training_seconds=v["training_seconds"],
        )
        for (day, key), v in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]
