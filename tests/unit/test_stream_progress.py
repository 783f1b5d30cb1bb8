"""Progress records on open holds, and crash recovery billing them, on both databases.

A gateway records the tokens a running stream has generated onto its hold; when the gateway dies,
`recover()` at the next start settles the hold as `interrupted` at those counts, priced at the hold's
own price version, free tokens first, never above the hold. Expected figures are computed here
independently of `yun.billing.pricing`.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from sqlalchemy import select

from yun.billing.service import BillingService, Estimate, Outcome
from yun.store import Database
from yun.store.money import HoldRecord, MoneyRepository, ProgressRecord
from yun.store.orm import ReservationRow

USD = 1_000_000_000
MODEL = "m"
GATEWAY = "gw-crashed"
# n$ per 1M tokens, not whole per token, so every charge rounds; the second version is far dearer.
V1 = (2_500_000_333, 10_000_000_777, 1_250_000_001)
V2 = (25_000_000_000, 90_000_000_000, 12_000_000_000)


@pytest.fixture
def db(org_db: Database) -> Database:
    return org_db


@pytest.fixture
def billing(db: Database) -> BillingService:
    service = BillingService(db, GATEWAY)
    service.money.add_price(MODEL, *V1)
    return service


def cost_of(price: tuple[int, int, int], uncached: int, output: int) -> int:
    def ceil(tokens: int, per_mtok: int) -> int:
        return math.ceil(Fraction(tokens * per_mtok, 1_000_000))

    return ceil(uncached, price[0]) + ceil(output, price[1])


def hold(billing: BillingService, prompt: int = 50, max_out: int = 100) -> HoldRecord:
    rid = f"req-{uuid.uuid4().hex}"
    return billing.reserve_blocking(rid, "org-a", "key-1", MODEL, "chat.completions", Estimate(prompt, max_out))


def progress(billing: BillingService, h: HoldRecord, prompt: int, completion: int) -> bool:
    return billing.record_progress(h, prompt, completion).result(timeout=30)


def stored_progress(db: Database, request_id: str) -> tuple[int, int]:
    table = ReservationRow.__table__
    with db.reader.connect() as c:
        row = c.execute(
            select(table.c.progress_prompt_tokens, table.c.progress_completion_tokens).where(
                table.c.request_id == request_id
            )
        ).one()
    return int(row[0]), int(row[1])


def restart(db: Database) -> BillingService:
    """A new gateway process after the crash (a new instance: no cached prices, no memory of the requests
    the dead one served). Its `recover(exclusive=True)` is what `yun serve` runs at start on SQLite,
    under the data-dir lock; tests/unit/test_leases.py covers recovery by lease on both databases."""
    return BillingService(db, "gw-restarted")


def records(money: MoneyRepository) -> dict[str, dict[str, object]]:
    return {str(r["request_id"]): r for r in money.usage_records("org-a", limit=1000)}


def assert_books_balance(money: MoneyRepository, grants: int) -> None:
    costs = sum(int(str(r["cost"])) for r in records(money).values())
    assert money.balance("org-a") == (grants - costs, 0)
    assert money.ledger_sum("org-a") == grants - costs


def test_progress_lands_on_the_open_hold_and_open_holds_returns_it(db: Database, billing: BillingService) -> None:
    billing.money.credit("org-a", "grant", USD, "g1")
    h = hold(billing)
    assert (h.progress_prompt_tokens, h.progress_completion_tokens) == (0, 0)
    assert progress(billing, h, 41, 7) is True
    assert progress(billing, h, 41, 19) is True  # a later record replaces the earlier one
    [found] = billing.money.open_holds(gateway_id=GATEWAY)
    assert (found.request_id, found.progress_prompt_tokens, found.progress_completion_tokens) == (h.request_id, 41, 19)
    assert found.amount == h.amount and found.price_version == h.price_version == 1
    # It moves no money: the hold is still held in full, nothing charged.
    assert billing.money.balance("org-a") == (USD, h.amount)
    assert billing.money.ledger_sum("org-a") == USD


def test_recovery_bills_the_last_progress_at_the_holds_price_version(db: Database, billing: BillingService) -> None:
    grant = 10 * USD
    billing.money.credit("org-a", "grant", grant, "g1")
    cut = hold(billing)
    progress(billing, cut, 43, 5)
    progress(billing, cut, 43, 27)
    untouched = hold(billing)  # crashed before its first progress record
    done = hold(billing)  # settled normally before the crash
    assert billing.settle_blocking(done, Outcome("r0", 40, 12, 0, "ok", 0.5, 0.1))[0]
    billing.set_price(MODEL, "25000", "90000")  # V2, after the holds: must not apply to them
    assert billing.price(MODEL) is not None and billing.price(MODEL).version == 2  # type: ignore[union-attr]

    assert restart(db).recover(exclusive=True) == 2
    got = records(billing.money)
    assert got[cut.request_id]["status"] == "interrupted"
    assert (got[cut.request_id]["prompt_tokens"], got[cut.request_id]["completion_tokens"]) == (43, 27)
    assert got[cut.request_id]["price_version"] == 1
    assert got[cut.request_id]["cost"] == cost_of(V1, 43, 27) != cost_of(V2, 43, 27)
    untouched_rec = got[untouched.request_id]
    assert untouched_rec["status"] == "interrupted"
    assert (untouched_rec["prompt_tokens"], untouched_rec["completion_tokens"], untouched_rec["cost"]) == (0, 0, 0)
    assert got[done.request_id]["cost"] == cost_of(V1, 40, 12)
    assert billing.money.open_holds() == []
    assert_books_balance(billing.money, grant)
    assert billing.money.balance("org-a")[0] == grant - cost_of(V1, 43, 27) - cost_of(V1, 40, 12)


def test_recovery_prices_recorded_cached_tokens_as_cached_input(db: Database, billing: BillingService) -> None:
    """llama.cpp's running count says how much of the prompt came from its cache; a crash-cut stream is
    priced as its settlement would have been, not as if the whole prompt were new input."""
    billing.money.credit("org-a", "grant", USD, "g1")
    h = hold(billing)
    assert billing.record_progress(h, 48, 20, cached_tokens=32).result(timeout=30) is True
    assert restart(db).recover(exclusive=True) == 1
    rec = records(billing.money)[h.request_id]
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["cached_tokens"]) == (48, 20, 32)
    cached_cost = math.ceil(Fraction(32 * V1[2], 1_000_000))
    assert rec["cost"] == cost_of(V1, 16, 20) + cached_cost < cost_of(V1, 48, 20)
    assert_books_balance(billing.money, USD)


def test_recovery_uses_free_tokens_first(db: Database, billing: BillingService) -> None:
    billing.money.credit("org-a", "grant", USD, "g1")
    billing.set_free_allowance("org-a", MODEL, 30)
    h = hold(billing)
    assert h.free_tokens == 30
    progress(billing, h, 40, 25)
    assert restart(db).recover(exclusive=True) == 1
    rec = records(billing.money)[h.request_id]
    # 30 free tokens cover the 25 output tokens, then 5 of the 40 input tokens.
    assert (rec["free_tokens"], rec["cost"]) == (30, cost_of(V1, 35, 0))
    month = h.month
    assert month is not None
    assert billing.money.free_used("org-a", MODEL, month) == (30, 0)
    assert_books_balance(billing.money, USD)


def test_recovery_never_charges_more_than_the_hold(db: Database, billing: BillingService) -> None:
    grant = USD
    billing.money.credit("org-a", "grant", grant, "g1")
    h = hold(billing, prompt=10, max_out=10)
    # Leave the organization exactly the hold: any charge above it would overdraw the balance.
    billing.money.credit("org-a", "adjustment", h.amount - grant, "spend-the-rest")
    assert billing.money.balance("org-a") == (h.amount, h.amount)
    # More than the engine could have generated under the hold (it is bound by max_tokens): the cap
    # keeps the invariant local to the settlement anyway.
    progress(billing, h, 500, 900)
    assert cost_of(V1, 500, 900) > h.amount
    assert restart(db).recover(exclusive=True) == 1
    rec = records(billing.money)[h.request_id]
    assert (rec["status"], rec["completion_tokens"], rec["cost"]) == ("interrupted", 900, h.amount)
    assert billing.money.balance("org-a") == (0, 0)
    assert billing.money.ledger_sum("org-a") == 0


def test_progress_after_settlement_changes_nothing_and_recovery_twice_bills_once(
    db: Database, billing: BillingService
) -> None:
    billing.money.credit("org-a", "grant", USD, "g1")
    h = hold(billing)
    progress(billing, h, 40, 9)
    assert billing.settle_blocking(h, Outcome("r0", 40, 30, 0, "ok", 0.5, 0.1)) == (True, cost_of(V1, 40, 30))
    # A record still in flight when the stream settled lands after it: the WHERE settled_at IS NULL drops it.
    assert progress(billing, h, 40, 99) is False
    assert stored_progress(db, h.request_id) == (40, 9)
    cut = hold(billing)
    progress(billing, cut, 40, 11)
    assert restart(db).recover(exclusive=True) == 1
    assert progress(billing, cut, 40, 50) is False
    assert restart(db).recover(exclusive=True) == 0  # nothing open: a second start bills nothing again
    got = records(billing.money)
    assert len(got) == 2
    assert (got[h.request_id]["status"], got[h.request_id]["completion_tokens"]) == ("ok", 30)
    assert (got[cut.request_id]["status"], got[cut.request_id]["completion_tokens"]) == ("interrupted", 11)
    ledger = billing.money.ledger("org-a", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    charges = [e for e in ledger if e["kind"] == "charge"]
    assert sorted(e["reference"] for e in charges) == sorted([h.request_id, cut.request_id])
    assert_books_balance(billing.money, USD)


def test_progress_and_settlement_in_one_group_commit(db: Database, billing: BillingService) -> None:
    """Queued together (one batch on PostgreSQL's writer thread), a record before the settlement lands
    and one after it is dropped, whatever the batching."""
    billing.money.credit("org-a", "grant", USD, "g1")
    h = hold(billing)
    writer = billing.writer
    before = writer.progress_writes
    futures = [
        writer.record_progress(ProgressRecord(h.request_id, h.org_id, 40, 3)),
        billing.settle(h, Outcome("r0", 40, 8, 0, "ok", 0.5, 0.1))[1],
        writer.record_progress(ProgressRecord(h.request_id, h.org_id, 40, 60)),
    ]
    assert [f.result(timeout=30) for f in futures] == [True, True, False]
    assert writer.progress_writes - before == 2
    assert stored_progress(db, h.request_id) == (40, 3)
    assert records(billing.money)[h.request_id]["completion_tokens"] == 8
    assert_books_balance(billing.money, USD)
