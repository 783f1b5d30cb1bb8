"""Monthly statements: what an organization used and paid in one UTC calendar month.

Usage line items come from the daily rollups; balances and credits come from the ledger. The two are
written in the same settling transaction, so the month's usage charges must equal the month's `charge`
ledger entries: a statement checks this and says whether it holds (`reconciled`) instead of trusting it.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yun.metering import format_usd
from yun.store.money import MoneyRepository

__all__ = ["CREDIT_KINDS", "CSV_HEADER", "LINE_KINDS", "LineItem", "Statement", "month_bounds", "monthly_statement"]

log = logging.getLogger("yun.billing")

LINE_KINDS = ("input_tokens", "cached_input_tokens", "output_tokens", "training_tokens", "replica_seconds")
"""Line item kinds, in statement order: inference tokens, the tokens fine-tuning jobs trained on, then the
replica-seconds of dedicated deployments."""
CREDIT_KINDS = ("grant", "topup", "refund", "adjustment")
"""Ledger kinds other than `charge` always shown on a statement (other kinds are shown when present)."""

CSV_HEADER = ("section", "model_id", "kind", "quantity", "amount_usd")


@dataclass(frozen=True)
class LineItem:
    model_id: str
    kind: str
    """One of LINE_KINDS."""
    quantity: int
    """Tokens used, including any the free tier covered (inference only: training has no free tier); tokens
    trained; or replica-seconds of dedicated compute."""
    amount: int
    """Nanodollars charged, at the price version each request was held at."""


@dataclass(frozen=True)
class Statement:
    """One org's month. Amounts are integer nanodollars; balances are signed like the ledger."""

    org_id: str
    year: int
    month: int
    start: datetime
    end: datetime
    """Exclusive: the first instant of the next month (UTC)."""
    opening_balance: int
    line_items: tuple[LineItem, ...]
    free_tokens: dict[str, int]
    """Per model, tokens the free tier covered this month (only models with some)."""
    credits: dict[str, int]
    """Signed ledger sums for the month by kind, every kind except `charge`."""
    usage_charges: int
    """What the month's usage cost, from the rollups (positive)."""
    ledger_charges: int
    """Minus the sum of the month's `charge` ledger entries (positive)."""
    closing_balance: int

    @property
    def reconciled(self) -> bool:
        """Usage and ledger agree; False means a charge without usage (or the reverse) needs an operator."""
        return self.usage_charges == self.ledger_charges

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "statement",
            "org_id": self.org_id,
            "period": {
                "year": self.year,
                "month": self.month,
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
            },
            "currency": "usd",
            "opening_balance": _money(self.opening_balance),
            "line_items": [
                {"model_id": i.model_id, "kind": i.kind, "quantity": i.quantity, "amount": _money(i.amount)}
                for i in self.line_items
            ],
            "free_tokens": dict(self.free_tokens),
            "credits": {kind: _money(v) for kind, v in self.credits.items()},
            "usage_charges": _money(self.usage_charges),
            "ledger_charges": _money(self.ledger_charges),
            "closing_balance": _money(self.closing_balance),
            "reconciled": self.reconciled,
        }

    def to_csv(self) -> str:
        """One row per line item, then the totals. Amounts are exact USD strings with 9 decimals; ledger
        rows are signed as in the ledger, so opening + ledger rows = closing."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(CSV_HEADER)
        w.writerow(("opening", "", "balance", "", format_usd(self.opening_balance)))
        for i in self.line_items:
            w.writerow(("usage", i.model_id, i.kind, i.quantity, format_usd(i.amount)))
        for model_id, tokens in self.free_tokens.items():
            w.writerow(("free", model_id, "free_tokens", tokens, format_usd(0)))
        w.writerow(("usage", "", "total", "", format_usd(self.usage_charges)))
        for kind, amount in self.credits.items():
            w.writerow(("ledger", "", kind, "", format_usd(amount)))
        w.writerow(("ledger", "", "charge", "", format_usd(-self.ledger_charges)))
        w.writerow(("closing", "", "balance", "", format_usd(self.closing_balance)))
        w.writerow(("check", "", "reconciled", "true" if self.reconciled else "false", ""))
        return out.getvalue()


def _money(nanodollars: int) -> dict[str, Any]:
    return {"nanodollars": nanodollars, "usd": format_usd(nanodollars)}


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC."""
    if not 1 <= month <= 12:
        raise ValueError("month must be 1..12")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def monthly_statement(money: MoneyRepository, org_id: str, year: int, month: int) -> Statement:
    """The statement of `org_id` for one UTC calendar month (the current month is the month so far)."""
    start, end = month_bounds(year, month)
    figures = money.period_figures(org_id, start, end)
    items: list[LineItem] = []
    free: dict[str, int] = {}
    for u in figures.usage:
        model = u["model_id"]
        lines = (
            LineItem(model, "input_tokens", u["prompt_tokens"] - u["cached_tokens"], u["input_cost"]),
            LineItem(model, "cached_input_tokens", u["cached_tokens"], u["cached_input_cost"]),
            LineItem(model, "output_tokens", u["completion_tokens"], u["output_cost"]),
            LineItem(model, "training_tokens", u["training_tokens"], u["training_cost"]),
            LineItem(model, "replica_seconds", u["compute_seconds"], u["compute_cost"]),
        )
        items += [i for i in lines if i.quantity or i.amount]
        if u["free_tokens"]:
            free[model] = u["free_tokens"]
    during = figures.ledger_during
    credits = {kind: 0 for kind in CREDIT_KINDS} | {k: v for k, v in sorted(during.items()) if k != "charge"}
    opening = figures.opening_balance
    statement = Statement(
        org_id=org_id,
        year=year,
        month=month,
        start=start,
        end=end,
        opening_balance=opening,
        line_items=tuple(items),
        free_tokens=free,
        credits=credits,
        usage_charges=sum(i.amount for i in items),
        ledger_charges=-during.get("charge", 0),
        closing_balance=opening + sum(during.values()),
    )
    if not statement.reconciled:
        log.error(
            "statement %s %04d-%02d does not reconcile: usage %d nanodollars, ledger charges %d",
            org_id,
            year,
            month,
            statement.usage_charges,
            statement.ledger_charges,
        )
    return statement
