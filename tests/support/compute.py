"""Checks of the compute money: every dedicated interval billed at most once, at exactly its price, and the
money tables agreeing with each other (for the compute billing tests, unit and live)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from yun.billing import BillingService
from yun.store import Database
from yun.store.compute import ComputeRepository
from yun.store.money import COMPUTE_ENDPOINT

__all__ = ["audit", "charged", "compute_records"]


def compute_records(billing: BillingService, org: str) -> list[dict[str, Any]]:
    return [r for r in billing.money.usage_records(org, limit=1000) if r["endpoint"] == COMPUTE_ENDPOINT]


def audit(db: Database, billing: BillingService, org: str) -> None:
    """The money tables agree: balance = ledger, held = open holds, nothing overdrawn, every compute usage
    record charged once in the ledger at exactly the price of the intervals it marked, every dedicated
    interval billed by at most one of them."""
    money = billing.money
    balance, held = money.balance(org)
    assert balance == money.ledger_sum(org) and balance - held >= 0 and held >= 0
    assert held == sum(h.amount for h in money.open_holds() if h.org_id == org)
    far = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    charges: dict[str, int] = {}
    for e in money.ledger(org, *far):
        if e["kind"] == "charge":
            assert e["reference"] not in charges, "charged twice"
            charges[e["reference"]] = -int(e["amount"])
    intervals = ComputeRepository(db).intervals()
    for r in compute_records(billing, org):
        mine = [i for i in intervals if i.charge_ref == r["request_id"]]
        assert r["cost"] == sum(i.price for i in mine) == charges.get(r["request_id"], 0)
        assert r["compute_seconds"] == sum(i.seconds for i in mine)
    records = {r["request_id"] for r in compute_records(billing, org)}
    assert {i.charge_ref for i in intervals if i.charge_ref is not None} <= records


def charged(db: Database) -> tuple[int, int]:
    """(seconds, nanodollars) of the dedicated intervals billed so far."""
    billed = [i for i in ComputeRepository(db).intervals() if i.charge_ref is not None]
    return sum(i.seconds for i in billed), sum(i.price for i in billed)
