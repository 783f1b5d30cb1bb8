"""The platform operator's own use (issue 10, item 6), on both databases: its requests are metered in full
(a usage record with the engine's tokens and the list-price cost, a `charge` in the ledger) but hold nothing
and are never refused for quota; an `internal` ledger entry covers each charge in the same transaction,
so the balance equals the ledger's sum and never goes below zero."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from yun.billing.service import BillingService, Estimate, Outcome
from yun.errors import QuotaExceeded
from yun.store import Database, OrganizationRepository
from yun.store.money import HoldRecord

OPERATOR, TENANT = "org-a", "org-b"
PRICE = (1_000_000_000, 2_000_000_000, 500_000_000)  # n$ per 1M tokens: 1000 n$ an input token, 2000 an output


@pytest.fixture
def billing(org_db: Database) -> BillingService:
    OrganizationRepository(org_db).get_or_create(TENANT, "b")
    service = BillingService(org_db, "gw", internal_orgs=frozenset({OPERATOR}))
    service.money.add_price("m", *PRICE)
    return service


def hold(billing: BillingService, org: str, prompt: int = 40, max_out: int = 100) -> HoldRecord:
    rid = f"req-{uuid.uuid4().hex}"
    return billing.reserve_blocking(rid, org, "key-1", "m", "chat.completions", Estimate(prompt, max_out))


def ledger(billing: BillingService, org: str) -> list[tuple[str, int, str]]:
    now = datetime.now(UTC)
    return [
        (e["kind"], e["amount"], e["reference"])
        for e in billing.money.ledger(org, now - timedelta(1), now + timedelta(1))
    ]


def record(billing: BillingService, org: str, request_id: str) -> dict[str, Any]:
    [found] = [r for r in billing.money.usage_records(org) if r["request_id"] == request_id]
    return found


def test_operator_use_is_metered_at_list_price_without_a_balance(billing: BillingService) -> None:
    h = hold(billing, OPERATOR)
    assert h.amount == 0 and billing.money.balance(OPERATOR) == (0, 0)  # nothing held, nothing refused
    settled, cost = billing.settle_blocking(h, Outcome("r0", 40, 90, 0, "ok", 0.1, 0.01))
    assert settled and cost == 40 * 1000 + 90 * 2000
    rec = record(billing, OPERATOR, h.request_id)
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["cost"], rec["status"]) == (40, 90, cost, "ok")
    assert sorted(ledger(billing, OPERATOR)) == [("charge", -cost, h.request_id), ("internal", cost, h.request_id)]
    assert billing.money.balance(OPERATOR) == (0, 0) and billing.money.ledger_sum(OPERATOR) == 0


def test_operator_credits_are_untouched_and_recovery_meters_the_same_way(
    org_db: Database, billing: BillingService
) -> None:
    billing.credit(OPERATOR, 1)
    h = hold(billing, OPERATOR)
    billing.record_progress(h, 40, 30).result(timeout=30)
    assert BillingService(org_db, "gw-next", internal_orgs=frozenset({OPERATOR})).recover(exclusive=True) == 1
    rec = record(billing, OPERATOR, h.request_id)
    assert (rec["status"], rec["cost"]) == ("interrupted", 40 * 1000 + 30 * 2000)
    assert billing.money.balance(OPERATOR) == (10**9, 0) == (billing.money.ledger_sum(OPERATOR), 0)


def test_a_tenant_without_credit_is_still_refused(billing: BillingService) -> None:
    with pytest.raises(QuotaExceeded):
        hold(billing, TENANT)
    assert billing.money.usage_records(TENANT) == []
