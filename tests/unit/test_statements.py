"""Usage queries and monthly statements on both databases, driven through the real reserve/settle path."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from sqlalchemy import delete, insert, update

from yun.billing.service import BillingService, Estimate, Outcome
from yun.billing.statements import CSV_HEADER, LineItem, Statement, month_bounds, monthly_statement
from yun.errors import InvalidRequest, NotFound
from yun.metering import UsageQueries, format_usd
from yun.store import Database, OrganizationRepository, upgrade
from yun.store.money import HoldRecord, MoneyRepository
from yun.store.orm import BalanceRow, LedgerRow, UsageRow

USD = 1_000_000_000
SMALL = (150_000_000, 600_000_000, 75_000_000)  # input, output, cached input per 1M tokens: exact per token
BIG = (2_500_000_333, 10_000_000_777, 1_250_000_001)  # not whole per token: each request rounds up


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    upgrade(database_url)
    database = Database(database_url)
    orgs = OrganizationRepository(database)
    orgs.get_or_create("org-a", "a")
    orgs.get_or_create("org-b", "b")
    yield database
    database.dispose()


@pytest.fixture
def money(db: Database) -> MoneyRepository:
    m = MoneyRepository(db)
    m.add_price("m-small", SMALL[0], SMALL[1], SMALL[2])
    m.add_price("m-big", BIG[0], BIG[1], BIG[2])
    m.credit("org-a", "grant", 10 * USD, "welcome")
    m.credit("org-b", "grant", 1 * USD, "welcome")
    return m


@pytest.fixture
def billing(db: Database, money: MoneyRepository) -> BillingService:
    return BillingService(db, "gw-test")


def ceil_cost(tokens: int, per_mtok: int) -> int:
    """Written independently of pricing.per_mtok: exact rational, rounded up."""
    return math.ceil(Fraction(tokens * per_mtok, 1_000_000))


def request(billing: BillingService, org: str, model: str, prompt: int, cached: int, completion: int) -> int:
    hold = billing.reserve_blocking(
        f"req-{uuid.uuid4().hex}", org, "key-1", model, "chat", Estimate(prompt, completion)
    )
    return settle(billing, hold, prompt, cached, completion)


def settle(billing: BillingService, hold: HoldRecord, prompt: int, cached: int, completion: int) -> int:
    settled, cost = billing.settle_blocking(hold, Outcome("replica-0", prompt, completion, cached, "ok", 0.2, 0.05))
    assert settled
    return cost


def this_month() -> tuple[int, int]:
    now = datetime.now(UTC)
    return now.year, now.month


def previous_month() -> tuple[int, int]:
    start, _ = month_bounds(*this_month())
    before = start - timedelta(days=1)
    return before.year, before.month


def items(statement: Statement) -> dict[tuple[str, str], tuple[int, int]]:
    return {(i.model_id, i.kind): (i.quantity, i.amount) for i in statement.line_items}


def test_statement_has_exact_line_items_credits_and_balances(billing: BillingService, money: MoneyRepository) -> None:
    costs = [
        request(billing, "org-a", "m-small", 1000, 200, 500),
        request(billing, "org-a", "m-small", 2000, 0, 100),
        request(billing, "org-a", "m-big", 3333, 0, 777),
        request(billing, "org-b", "m-small", 100_000, 0, 10_000),
    ]
    money.credit("org-a", "topup", 5 * USD, "stripe-1")
    money.credit("org-a", "refund", 123, "refund-1")
    money.credit("org-a", "adjustment", -1000, "adj-1")

    s = monthly_statement(money, "org-a", *this_month())

    # m-small costs a whole number of nanodollars per token; m-big rounds each request up.
    assert items(s) == {
        ("m-small", "input_tokens"): (2800, 800 * 150 + 2000 * 150),
        ("m-small", "cached_input_tokens"): (200, 200 * 75),
        ("m-small", "output_tokens"): (600, 600 * 600),
        ("m-big", "input_tokens"): (3333, 8_332_502),
        ("m-big", "output_tokens"): (777, 7_770_001),
    }
    assert [(i.model_id, i.kind) for i in s.line_items][:2] == [("m-big", "input_tokens"), ("m-big", "output_tokens")]
    assert s.usage_charges == sum(costs[:3]) == 420_000 + 15_000 + 360_000 + 8_332_502 + 7_770_001
    assert s.ledger_charges == s.usage_charges and s.reconciled
    assert s.credits == {"grant": 10 * USD, "topup": 5 * USD, "refund": 123, "adjustment": -1000}
    assert s.opening_balance == 0
    assert s.closing_balance == 15 * USD + 123 - 1000 - s.usage_charges
    assert money.balance("org-a") == (s.closing_balance, 0)  # every hold released
    assert s.free_tokens == {}

    other = monthly_statement(money, "org-b", *this_month())
    assert items(other) == {
        ("m-small", "input_tokens"): (100_000, 15_000_000),
        ("m-small", "output_tokens"): (10_000, 6_000_000),
    }
    assert other.reconciled and other.closing_balance == USD - 21_000_000
    assert other.credits == {"grant": USD, "topup": 0, "refund": 0, "adjustment": 0}


def test_price_change_mid_month_keeps_each_request_at_its_version(
    billing: BillingService, money: MoneyRepository
) -> None:
    held_at_v1 = billing.reserve_blocking("req-old", "org-a", "key-1", "m-small", "chat", Estimate(1000, 500))
    v2 = money.add_price("m-small", 300_000_001, 900_000_000, 100_000_000)
    billing.invalidate()  # what the 2 s price cache does by itself in production
    request(billing, "org-a", "m-small", 1000, 100, 500)  # held and settled at v2
    settle(billing, held_at_v1, 1000, 100, 500)  # settles after the change, still at v1

    s = monthly_statement(money, "org-a", *this_month())
    v1_in, v1_cached, v1_out = 900 * 150, 100 * 75, 500 * 600
    v2_in, v2_cached, v2_out = ceil_cost(900, 300_000_001), 100 * 100, 500 * 900
    assert v2_in == 270_001  # 270_000.0009, rounded up
    assert items(s) == {
        ("m-small", "input_tokens"): (1800, v1_in + v2_in),
        ("m-small", "cached_input_tokens"): (200, v1_cached + v2_cached),
        ("m-small", "output_tokens"): (1000, v1_out + v2_out),
    }
    assert s.reconciled
    by_request = {r["request_id"]: r for r in UsageQueries(money).records("org-a")[0]}
    assert by_request["req-old"]["price_version"] == v2.version - 1
    assert by_request["req-old"]["cost_nanodollars"] == v1_in + v1_cached + v1_out
    new = next(r for k, r in by_request.items() if k != "req-old")
    assert new["price_version"] == v2.version and new["cost_nanodollars"] == v2_in + v2_cached + v2_out


def test_free_tokens_show_in_quantity_but_not_in_amount(billing: BillingService, money: MoneyRepository) -> None:
    money.set_free_allowance("org-a", "m-small", 300)
    billing.invalidate()
    request(billing, "org-a", "m-small", 1000, 0, 500)  # the free tier covers 300 output tokens first
    s = monthly_statement(money, "org-a", *this_month())
    assert items(s) == {
        ("m-small", "input_tokens"): (1000, 1000 * 150),
        ("m-small", "output_tokens"): (500, 200 * 600),
    }
    assert s.free_tokens == {"m-small": 300} and s.reconciled
    assert any(row[:4] == ["free", "m-small", "free_tokens", "300"] for row in csv.reader(io.StringIO(s.to_csv())))


def test_csv_and_json_round_trip_exactly(billing: BillingService, money: MoneyRepository) -> None:
    request(billing, "org-a", "m-big", 4321, 1234, 999)
    money.credit("org-a", "refund", 1, "refund-1")
    s = monthly_statement(money, "org-a", *this_month())

    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert tuple(rows[0]) == CSV_HEADER
    assert all(re.fullmatch(r"-?\d+\.\d{9}", r["amount_usd"]) for r in rows if r["section"] != "check")
    nanos = {id(r): int(Decimal(r["amount_usd"]) * USD) for r in rows if r["amount_usd"]}
    usage = [r for r in rows if r["section"] == "usage" and r["kind"] != "total"]
    assert [LineItem(r["model_id"], r["kind"], int(r["quantity"]), nanos[id(r)]) for r in usage] == list(s.line_items)
    (total,) = (r for r in rows if r["section"] == "usage" and r["kind"] == "total")
    assert nanos[id(total)] == sum(nanos[id(r)] for r in usage) == s.usage_charges
    (opening,) = (r for r in rows if r["section"] == "opening")
    (closing,) = (r for r in rows if r["section"] == "closing")
    ledger = [r for r in rows if r["section"] == "ledger"]
    assert nanos[id(opening)] + sum(nanos[id(r)] for r in ledger) == nanos[id(closing)] == s.closing_balance
    assert {r["kind"]: nanos[id(r)] for r in ledger} == {
        "grant": 10 * USD,
        "topup": 0,
        "refund": 1,
        "adjustment": 0,
        "charge": -s.usage_charges,
    }
    assert rows[-1]["kind"] == "reconciled" and rows[-1]["quantity"] == "true"

    body = json.loads(json.dumps(s.to_json()))
    assert body["reconciled"] is True
    assert body["closing_balance"] == {"nanodollars": s.closing_balance, "usd": format_usd(s.closing_balance)}
    assert [(i["model_id"], i["kind"], i["quantity"], i["amount"]["nanodollars"]) for i in body["line_items"]] == [
        (i.model_id, i.kind, i.quantity, i.amount) for i in s.line_items
    ]


def test_empty_previous_month_and_carried_balance(
    db: Database, billing: BillingService, money: MoneyRepository
) -> None:
    request(billing, "org-a", "m-small", 100, 0, 10)
    empty = monthly_statement(money, "org-a", *previous_month())
    assert empty.line_items == () and empty.usage_charges == empty.ledger_charges == 0 and empty.reconciled
    assert empty.opening_balance == empty.closing_balance == 0
    assert set(empty.credits.values()) == {0}

    # A grant dated last month (written as the ledger would have, balance moving with it) carries over.
    start, _ = month_bounds(*this_month())
    with db.engine.begin() as c:
        c.execute(
            insert(LedgerRow.__table__).values(
                org_id="org-a", kind="grant", amount=7 * USD, reference="old", created_at=start - timedelta(days=2)
            )
        )
        balances = BalanceRow.__table__
        c.execute(update(balances).where(balances.c.org_id == "org-a").values(balance=balances.c.balance + 7 * USD))
    last = monthly_statement(money, "org-a", *previous_month())
    assert (last.opening_balance, last.credits["grant"], last.closing_balance) == (0, 7 * USD, 7 * USD)
    now = monthly_statement(money, "org-a", *this_month())
    assert now.opening_balance == 7 * USD and now.reconciled
    assert now.closing_balance == money.balance("org-a")[0] == 17 * USD - 100 * 150 - 10 * 600


def test_a_charge_without_usage_does_not_reconcile(
    billing: BillingService, money: MoneyRepository, caplog: pytest.LogCaptureFixture
) -> None:
    request(billing, "org-a", "m-small", 100, 0, 10)
    with pytest.raises(InvalidRequest):
        money.credit("org-a", "charge", -500, "manual-charge")  # charges come only from settlements
    with pytest.raises(NotFound):
        money.credit("org-nope", "grant", 500, "typo")
    # A charge written behind the repository's back (a corrupted ledger) must show up as unreconciled.
    with money._db.engine.begin() as c:
        c.execute(
            insert(LedgerRow.__table__).values(
                org_id="org-a", kind="charge", amount=-500, reference="manual-charge", created_at=datetime.now(UTC)
            )
        )
    with caplog.at_level(logging.ERROR, logger="yun.billing"):
        s = monthly_statement(money, "org-a", *this_month())
    assert not s.reconciled and s.ledger_charges == s.usage_charges + 500
    assert "does not reconcile" in caplog.text
    assert s.to_csv().rstrip().endswith("reconciled,false,")


@pytest.mark.parametrize("month", [0, 13])
def test_bad_month_is_refused(money: MoneyRepository, month: int) -> None:
    with pytest.raises(ValueError, match="month"):
        monthly_statement(money, "org-a", 2026, month)


def test_december_ends_at_new_year() -> None:
    assert month_bounds(2026, 12) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_usage_summary_reads_rollups_by_model_and_day(
    db: Database, billing: BillingService, money: MoneyRepository
) -> None:
    request(billing, "org-a", "m-small", 1000, 200, 500)
    request(billing, "org-a", "m-big", 10, 0, 1)
    request(billing, "org-b", "m-small", 5, 0, 5)
    today = datetime.now(UTC).date()
    usage = UsageQueries(money)

    by_model = usage.summary("org-a", today - timedelta(days=29), today, "model")
    assert [r.key for r in by_model] == ["m-big", "m-small"]
    small = by_model[1]
    assert (small.requests, small.prompt_tokens, small.cached_tokens, small.input_tokens) == (1, 1000, 200, 800)
    assert (small.completion_tokens, small.free_tokens) == (500, 0)
    assert (small.input_cost, small.cached_input_cost, small.output_cost) == (120_000, 15_000, 300_000)
    assert small.cost == 435_000 and small.to_dict()["cost_usd"] == "0.000435000"

    (day,) = usage.summary("org-a", today, today, "day")  # both days are included: today alone is today
    assert day.key == today.isoformat() and day.requests == 2 and day.cost == 435_000 + by_model[0].cost
    assert usage.summary("org-a", today - timedelta(days=30), today - timedelta(days=1), "day") == []

    # Rollups alone answer: deleting the raw records changes nothing (and org-b's usage never appears).
    with db.engine.begin() as c:
        c.execute(delete(UsageRow.__table__))
    assert usage.summary("org-a", today - timedelta(days=29), today, "model") == by_model
    (b,) = usage.summary("org-b", today, today)
    assert (b.key, b.requests, b.cost) == ("m-small", 1, 5 * 150 + 5 * 600)


def test_usage_records_page_newest_first(billing: BillingService, money: MoneyRepository) -> None:
    costs = [request(billing, "org-a", "m-small", 100 * (i + 1), 0, 10) for i in range(3)]
    request(billing, "org-b", "m-small", 7, 0, 7)
    usage = UsageQueries(money)

    first, more = usage.records("org-a", limit=2)
    assert [r["prompt_tokens"] for r in first] == [300, 200] and more
    assert [r["cost_nanodollars"] for r in first] == [costs[2], costs[1]]
    assert first[0]["cost_usd"] == format_usd(costs[2]) and "replica" not in first[0]
    assert datetime.fromisoformat(first[-1]["created_at"]).utcoffset() == timedelta(0)
    rest, more = usage.records("org-a", limit=2, after=first[-1]["request_id"])
    assert [r["prompt_tokens"] for r in rest] == [100] and not more
    assert [r["prompt_tokens"] for r in usage.records("org-b")[0]] == [7]
    with pytest.raises(NotFound):  # another org's record is no cursor here
        usage.records("org-a", after=usage.records("org-b")[0][0]["request_id"])


def test_usage_records_sharing_a_timestamp_page_without_gaps(
    db: Database, billing: BillingService, money: MoneyRepository
) -> None:
    """Keyset paging on (created_at, request_id): a page boundary inside a run of equal timestamps
    neither skips nor repeats a record."""
    for i in range(7):
        request(billing, "org-a", "m-small", 10 + i, 0, 1)
    with db.engine.begin() as c:
        c.execute(update(UsageRow.__table__).values(created_at=datetime(2026, 11, 2, tzinfo=UTC)))
    usage = UsageQueries(money)
    seen: list[str] = []
    after = None
    while True:
        page, more = usage.records("org-a", limit=3, after=after)
        seen += [r["request_id"] for r in page]
        if not more:
            break
        after = page[-1]["request_id"]
    assert len(seen) == len(set(seen)) == 7


@pytest.mark.parametrize(
    "call",
    [
        lambda u: u.summary("org-a", datetime.now(UTC), datetime.now(UTC)),
        lambda u: u.summary("org-a", datetime.now(UTC).date(), datetime.now(UTC).date() - timedelta(days=1)),
        lambda u: u.summary("org-a", datetime.now(UTC).date(), datetime.now(UTC).date(), "week"),
        lambda u: u.records("org-a", limit=0),
    ],
)
def test_usage_queries_refuse_bad_arguments(money: MoneyRepository, call: Callable[[UsageQueries], object]) -> None:
    with pytest.raises(ValueError):
        call(UsageQueries(money))
