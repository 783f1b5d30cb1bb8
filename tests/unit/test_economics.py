"""Unit economics on SQLite and PostgreSQL (the `org_db` fixture), from real traffic through the money path
(token requests, a dedicated deployment billed by the second, shared compute): revenue sums equal the
ledger's charges and the usage rollups, cost sums equal the metered intervals, day by day."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.replicas import add_replica
from yun.billing import BillingService, Estimate, Outcome
from yun.billing.compute import ComputeBilling
from yun.billing.economics import unit_economics
from yun.store import Database, DeploymentRepository, OrganizationRepository
from yun.store.compute import ComputeRepository

USD = 1_000_000_000
TODAY = datetime.now(UTC).date()
MIDNIGHT = datetime.combine(TODAY, datetime.min.time(), UTC)
FIRST, LAST = TODAY - timedelta(days=1), TODAY + timedelta(days=1)  # a margin for a test run across midnight


def at(seconds: float) -> datetime:
    return MIDNIGHT + timedelta(seconds=seconds)


@pytest.fixture
def billing(org_db: Database) -> BillingService:
    orgs = OrganizationRepository(org_db)
    orgs.get_or_create("org-b", "b")
    orgs.get_or_create("default", "default")
    b = BillingService(org_db, "gw-test", internal_orgs=frozenset({"default"}))
    b.money.add_price("m-tok", 1_000_000_000, 2_000_000_000, 500_000_000)  # 1000 / 2000 / 500 a token
    b.set_compute_price("cpu1", "1.80", "3.60")  # 500,000 / 1,000,000 nanodollars a replica-second
    for org in ("org-a", "org-b"):
        b.credit(org, "100")
    return b


def tokens(billing: BillingService, org: str, prompt: int, completion: int) -> int:
    hold = billing.reserve_blocking(
        f"req-{uuid.uuid4().hex}", org, "key", "m-tok", "chat", Estimate(prompt, completion)
    )
    settled, cost = billing.settle_blocking(hold, Outcome("r", prompt, completion, 0, "ok", 0.1, 0.01))
    assert settled
    return cost


def ledger_charges(billing: BillingService, org: str) -> int:
    far = MIDNIGHT - timedelta(days=30), MIDNIGHT + timedelta(days=30)
    return -sum(int(e["amount"]) for e in billing.money.ledger(org, *far) if e["kind"] == "charge")


def test_revenue_and_cost_add_up_to_the_ledger_and_the_meter(org_db: Database, billing: BillingService) -> None:
    assert tokens(billing, "org-a", 100, 50) == 200_000
    assert tokens(billing, "org-a", 10, 5) == 20_000
    assert tokens(billing, "org-b", 1000, 0) == 1_000_000
    tokens(billing, "default", 500, 500)  # the operator's own: charged, covered, no revenue
    deployments = DeploymentRepository(org_db)
    deployments.create("m-tok", deployment_id="shared")
    deployments.create("m-ded", deployment_id="ded", owner_org="org-b")
    add_replica(org_db, "shared", "s1", "ready", created_at=at(-30))  # from yesterday into today
    add_replica(org_db, "ded", "d1", "ready", created_at=at(-20))
    biller = ComputeBilling(org_db, billing, deployments, interval_s=60)
    biller.bill(at(-20))
    biller.bill(at(40))

    intervals = ComputeRepository(org_db).intervals()
    by_model = unit_economics(billing.money, billing.compute, FIRST, LAST, "model", internal_orgs=billing.internal_orgs)
    by_org = unit_economics(billing.money, billing.compute, FIRST, LAST, "org", internal_orgs=billing.internal_orgs)

    # Revenue: per org exactly its `charge` ledger entries; the operator's own org none, though charged.
    revenue = {r.key: 0 for r in by_org}
    for r in by_org:
        revenue[r.key] += r.revenue
    assert revenue.get("org-a") == ledger_charges(billing, "org-a") == 220_000
    assert revenue.get("org-b") == ledger_charges(billing, "org-b") == 1_000_000 + 60 * 1_000_000
    assert revenue.get("default", 0) == 0 and ledger_charges(billing, "default") > 0
    assert sum(r.revenue for r in by_model) == sum(r.revenue for r in by_org)
    # ... and the usage rollups of each (what `yun usage` and statements read).
    for org in ("org-a", "org-b"):
        usage = billing.money.rollup_sums(org, FIRST.isoformat(), LAST.isoformat(), "day")
        assert sum(u["cost"] for u in usage) == revenue[org]
    compute_revenue = {(r.day, r.key): r.compute_revenue for r in by_model if r.compute_revenue}
    assert compute_revenue == {(TODAY.isoformat(), "m-ded"): 60 * 1_000_000}

    # Cost: every metered interval at its cost price, on the day it was used; shared is the operator's.
    def cost_of(pred) -> dict[str, int]:  # type: ignore[no-untyped-def]
        out: dict[str, int] = {}
        for i in intervals:
            if pred(i):
                out[i.day] = out.get(i.day, 0) + i.cost
        return out

    yesterday, today = (TODAY - timedelta(days=1)).isoformat(), TODAY.isoformat()
    assert cost_of(lambda i: i.deployment_id == "shared") == {yesterday: 30 * 500_000, today: 40 * 500_000}
    assert {r.day: r.cost for r in by_model if r.key == "m-tok"} == {yesterday: 15_000_000, today: 20_000_000}
    assert {r.day: r.cost for r in by_model if r.key == "m-ded"} == {yesterday: 10_000_000, today: 20_000_000}
    assert {r.day: r.cost for r in by_org if r.key is None} == {yesterday: 15_000_000, today: 20_000_000}
    assert {r.day: r.cost for r in by_org if r.key == "org-b"} == {yesterday: 10_000_000, today: 20_000_000}
    assert sum(r.cost for r in by_model) == sum(r.cost for r in by_org) == sum(i.cost for i in intervals)
    assert {(r.day, r.key): r.replica_seconds for r in by_org} == {
        (yesterday, None): 30,
        (yesterday, "org-b"): 20,
        (today, None): 40,
        (today, "org-b"): 40,
        (today, "org-a"): 0,
    }
    [b_today] = [r for r in by_org if (r.day, r.key) == (today, "org-b")]
    assert b_today.margin == 1_000_000 + 60_000_000 - 20_000_000 and b_today.billed_replica_seconds == 60

    # A range of one day holds that day only.
    only_yesterday = unit_economics(
        billing.money, billing.compute, TODAY - timedelta(days=1), TODAY - timedelta(days=1), "org"
    )
    assert {(r.key, r.cost, r.revenue) for r in only_yesterday} == {(None, 15_000_000, 0), ("org-b", 10_000_000, 0)}


def test_by_must_be_model_or_org(org_db: Database, billing: BillingService) -> None:
    with pytest.raises(ValueError, match="by must be"):
        unit_economics(billing.money, billing.compute, TODAY, TODAY, "day")  # type: ignore[arg-type]
