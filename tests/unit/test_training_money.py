"""Training in the money reports, on SQLite and PostgreSQL (the `org_db` fixture), driven through the real
hold and settlement of a fine-tuning job (billing/training.py): its trained tokens are a `training_tokens`
line of their own, never input tokens, in statements (JSON and CSV), in usage totals and records, and the
statement still reconciles with the ledger; migration 0016 moves settlements written before it."""

from __future__ import annotations

import csv
import io
import math
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import column, insert, select, table

from yun.billing import BillingService, Estimate, Outcome
from yun.billing.statements import monthly_statement
from yun.billing.training import TrainingBilling
from yun.metering import UsageQueries
from yun.store import Database, OrganizationRepository, upgrade
from yun.store.orm import RollupRow, UsageRow

USD = 1_000_000_000
# Per 1M tokens: input, output, cached input, and a training price that is not whole per token.
INPUT, OUTPUT, CACHED, TRAINING = 150_000_000, 600_000_000, 75_000_000, 3_000_000_007


def ceil_cost(tokens: int, per_mtok: int) -> int:
    return math.ceil(Fraction(tokens * per_mtok, 1_000_000))


@pytest.fixture
def billing(org_db: Database) -> BillingService:
    b = BillingService(org_db, "gw-test")
    b.money.add_price("m", INPUT, OUTPUT, CACHED, TRAINING)
    b.money.credit("org-a", "grant", 10 * USD, "welcome")
    return b


def train(billing: BillingService, org: str, planned: int, trained: int, status: str = "ok") -> int:
    """One job's money as the runner does it: hold the planned tokens, settle the trained ones."""
    training = TrainingBilling(billing)
    job = f"ftjob-{uuid.uuid4().hex[:12]}"
    hold = training.reserve(job, org, "key-1", "m", planned)
    assert (found := training.hold_of(job)) is not None and found.request_id == hold.request_id
    return training.settle(hold, trained, status, 1.5, f"job:{job}")


def chat(billing: BillingService, org: str, prompt: int, completion: int) -> int:
    hold = billing.reserve_blocking(f"req-{uuid.uuid4().hex}", org, "key-1", "m", "chat", Estimate(prompt, completion))
    settled, cost = billing.settle_blocking(hold, Outcome("replica-0", prompt, completion, 0, "ok", 0.2, 0.05))
    assert settled
    return cost


def test_a_jobs_trained_tokens_are_their_own_line_and_the_statement_reconciles(billing: BillingService) -> None:
    chat_cost = chat(billing, "org-a", 1000, 100)
    full = train(billing, "org-a", 4000, 4000)
    cancelled = train(billing, "org-a", 4000, 1234, "cancelled")
    assert full == ceil_cost(4000, TRAINING) and cancelled == ceil_cost(1234, TRAINING)

    now = datetime.now(UTC)
    s = monthly_statement(billing.money, "org-a", now.year, now.month)
    lines = {(i.model_id, i.kind): (i.quantity, i.amount) for i in s.line_items}
    assert lines == {
        ("m", "input_tokens"): (1000, 1000 * 150),
        ("m", "output_tokens"): (100, 100 * 600),
        ("m", "training_tokens"): (5234, full + cancelled),
    }
    assert [i.kind for i in s.line_items] == ["input_tokens", "output_tokens", "training_tokens"]
    assert s.usage_charges == s.ledger_charges == chat_cost + full + cancelled and s.reconciled
    assert s.closing_balance == 10 * USD - s.usage_charges == billing.money.balance("org-a")[0]

    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    (row,) = [r for r in rows if r["kind"] == "training_tokens"]
    assert (row["section"], row["model_id"], row["quantity"]) == ("usage", "m", "5234")
    assert row["amount_usd"] == f"0.{full + cancelled:09d}"
    body: dict[str, Any] = s.to_json()
    (item,) = [i for i in body["line_items"] if i["kind"] == "training_tokens"]
    assert item["quantity"] == 5234 and item["amount"]["nanodollars"] == full + cancelled
    assert body["reconciled"] is True


def test_usage_totals_and_records_show_training_tokens_not_input(billing: BillingService) -> None:
    chat(billing, "org-a", 1000, 100)
    cost = train(billing, "org-a", 4000, 3000)
    usage = UsageQueries(billing.money)
    today = datetime.now(UTC).date()
    for group_by in ("model", "day"):
        (total,) = usage.summary("org-a", today, today, group_by)
        assert (total.requests, total.prompt_tokens, total.input_tokens) == (1, 1000, 1000)
        assert (total.training_tokens, total.training_cost) == (3000, cost)
        assert total.input_cost == 1000 * 150 and total.cost == 1000 * 150 + 100 * 600 + cost
        assert total.to_dict()["training_tokens"] == 3000
    records, _ = usage.records("org-a")
    (job,) = [r for r in records if r["endpoint"] == "fine_tuning"]
    assert (job["training_tokens"], job["prompt_tokens"], job["cost_nanodollars"]) == (3000, 0, cost)
    (request,) = [r for r in records if r["endpoint"] == "chat"]
    assert (request["training_tokens"], request["prompt_tokens"]) == (0, 1000)


def test_training_has_no_free_tier(billing: BillingService) -> None:
    billing.money.set_free_allowance("org-a", "m", 1_000_000)
    billing.invalidate()
    cost = train(billing, "org-a", 500, 500)
    assert cost == ceil_cost(500, TRAINING) > 0
    now = datetime.now(UTC)
    s = monthly_statement(billing.money, "org-a", now.year, now.month)
    assert s.free_tokens == {} and s.reconciled
    assert billing.money.free_used("org-a", "m", now.strftime("%Y-%m")) == (0, 0)


def _alembic(url: str) -> Config:
    from yun.store import migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate._HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def test_migration_0016_moves_settlements_written_as_input_tokens(database_url: str) -> None:
    """A job settled before 0016 was written as the base model's input tokens and one request: the upgrade
    moves it to the training columns, its rollup row with it, and leaves requests alone."""
    command.upgrade(_alembic(database_url), "0014")
    db = Database(database_url)
    try:
        OrganizationRepository(db).get_or_create("org-a", "a")
        created = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)
        common = {"org_id": "org-a", "key_id": "k", "model_id": "m", "replica": "r", "completion_tokens": 0}
        zeros = {"cached_tokens": 0, "free_tokens": 0, "latency_ms": 0, "ttft_ms": None, "price_version": 1}
        # The tables as 0014 made them (the ORM's have 0016's columns).
        usage_0014 = table("usage_records", *(column(k) for k in (*common, *zeros, "request_id", "endpoint")))
        usage_0014.append_column(column("prompt_tokens"))
        for k in ("cost", "status", "created_at"):
            usage_0014.append_column(column(k))
        rollup_keys = ("org_id", "model_id", "day", "requests", "prompt_tokens", "completion_tokens")
        rollup_keys += ("cached_tokens", "free_tokens", "input_cost", "cached_input_cost", "output_cost", "cost")
        rollup_0014 = table("usage_rollups", *(column(k) for k in rollup_keys))
        with db.engine.begin() as c:
            old = [("ft-1", "fine_tuning", 700, 2100), ("ft-2", "fine_tuning", 300, 900), ("req-1", "chat", 50, 7)]
            for request_id, endpoint, tokens, cost in old:
                c.execute(
                    insert(usage_0014).values(
                        request_id=request_id,
                        endpoint=endpoint,
                        prompt_tokens=tokens,
                        cost=cost,
                        status="ok",
                        created_at=created,
                        **common,
                        **zeros,
                    )
                )
            c.execute(
                insert(rollup_0014).values(
                    org_id="org-a",
                    model_id="m",
                    day="2026-03-31",
                    requests=3,
                    prompt_tokens=1050,
                    completion_tokens=0,
                    cached_tokens=0,
                    free_tokens=0,
                    input_cost=3007,
                    cached_input_cost=0,
                    output_cost=0,
                    cost=3007,
                )
            )
        upgrade(database_url)
        with db.engine.connect() as c:
            (r,) = c.execute(select(RollupRow.__table__)).mappings().all()
            records = {
                u["request_id"]: (u["prompt_tokens"], u["training_tokens"])
                for u in c.execute(select(UsageRow.__table__)).mappings()
            }
        assert (r["requests"], r["prompt_tokens"], r["input_cost"]) == (1, 50, 7)
        assert (r["training_tokens"], r["training_cost"], r["cost"]) == (1000, 3000, 3007)
        assert records == {"ft-1": (0, 700), "ft-2": (0, 300), "req-1": (50, 0)}
    finally:
        db.dispose()
