"""Training in unit economics, on SQLite and PostgreSQL (the `org_db` fixture): each run of a fine-tuning job
is recorded once, on the days it ran, at the cost price of its trainer's shape, under the job's base model
(and, by organization, as the operator's cost); its trained tokens are revenue of the model and the org."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from yun.billing import BillingService, Estimate, Outcome
from yun.billing.economics import unit_economics
from yun.billing.training import TrainingBilling, TrainingRun
from yun.store import Database, OrganizationRepository

USD = 1_000_000_000
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
MIDNIGHT = datetime.combine(TODAY, datetime.min.time(), UTC)
# cpu2 costs the operator $0.72 an hour: 200,000 nanodollars a second.
PER_SECOND = 200_000


@pytest.fixture
def billing(org_db: Database) -> BillingService:
    OrganizationRepository(org_db).get_or_create("default", "default")
    b = BillingService(org_db, "gw-test", internal_orgs=frozenset({"default"}))
    b.money.add_price("base", 1_000_000_000, 2_000_000_000, 500_000_000, 1_000_000_000)  # training: 1000 a token
    b.set_compute_price("cpu2", "0.72", "1.44")
    b.credit("org-a", "100")
    return b


def run(job: str, n: int, start: datetime, end: datetime, org: str = "org-a") -> TrainingRun:
    return TrainingRun(job, n, org, "base", "cpu2", 2.0, 0.0, start, end)


def test_a_run_is_cost_on_the_days_it_ran_and_its_tokens_are_revenue(billing: BillingService) -> None:
    training = TrainingBilling(billing)
    job = f"ftjob-{uuid.uuid4().hex[:12]}"
    hold = training.reserve(job, "org-a", "key", "base", 5000)
    # One run from 30 s before midnight to 40.7 s after: whole seconds, cut at midnight.
    assert training.record_run(run(job, 1, MIDNIGHT - timedelta(seconds=30), MIDNIGHT + timedelta(seconds=40.7)))
    assert training.settle(hold, 4000, "ok", 70.0, f"job:{job}") == 4000 * 1000
    # Inference on the same model the same day: token revenue, kept apart from training revenue.
    chat = billing.reserve_blocking("req-1", "org-a", "key", "base", "chat", Estimate(10, 5))
    assert billing.settle_blocking(chat, Outcome("r", 10, 5, 0, "ok", 0.1, 0.01)) == (True, 10 * 1000 + 5 * 2000)

    by_model = unit_economics(billing.money, billing.compute, YESTERDAY, TODAY, "model")
    rows = {(r.day, r.key): r for r in by_model}
    before, after = rows[(YESTERDAY.isoformat(), "base")], rows[(TODAY.isoformat(), "base")]
    assert (before.training_seconds, before.training_cost, before.cost) == (30, 30 * PER_SECOND, 30 * PER_SECOND)
    assert (after.training_seconds, after.training_cost, after.cost) == (40, 40 * PER_SECOND, 40 * PER_SECOND)
    assert (after.training_revenue, after.token_revenue, after.compute_revenue) == (4_000_000, 20_000, 0)
    assert after.revenue == 4_020_000 and after.margin == 4_020_000 - 40 * PER_SECOND
    assert (before.revenue, before.replica_seconds, after.replica_seconds) == (0, 0, 0)
    as_json = after.to_dict("model")
    assert as_json["training_revenue"] == 4_000_000 and as_json["training_seconds"] == 40
    assert as_json["training_cost_usd"] == "0.008000000" and as_json["token_revenue"] == 20_000

    # By organization: the org pays by tokens, so the compute is the operator's (None) and the revenue the org's.
    by_org = {(r.day, r.key): r for r in unit_economics(billing.money, billing.compute, YESTERDAY, TODAY, "org")}
    assert by_org[(TODAY.isoformat(), None)].training_cost == 40 * PER_SECOND
    assert by_org[(YESTERDAY.isoformat(), None)].training_seconds == 30
    mine = by_org[(TODAY.isoformat(), "org-a")]
    assert (mine.training_revenue, mine.cost, mine.training_seconds) == (4_000_000, 0, 0)
    # The operator's own jobs are charged, covered, and no revenue: their compute is still a cost.
    internal = TrainingBilling(billing)
    own = f"ftjob-{uuid.uuid4().hex[:12]}"
    internal.settle(internal.reserve(own, "default", "key", "base", 100), 100, "ok", 1.0, f"job:{own}")
    assert internal.record_run(run(own, 1, MIDNIGHT + timedelta(seconds=100), MIDNIGHT + timedelta(seconds=110)))
    again = {
        (r.day, r.key): r
        for r in unit_economics(
            billing.money, billing.compute, TODAY, TODAY, "org", internal_orgs=billing.internal_orgs
        )
    }
    assert "default" not in {key for _, key in again}
    assert again[(TODAY.isoformat(), None)].training_seconds == 50


def test_each_run_is_recorded_once_however_often_its_end_is(billing: BillingService) -> None:
    training = TrainingBilling(billing)
    job = f"ftjob-{uuid.uuid4().hex[:12]}"
    start = MIDNIGHT + timedelta(seconds=1000)
    assert training.record_run(run(job, 1, start, start + timedelta(seconds=60)))
    # A runner that crashed after recording run 1 records it again at restart, with a later end: nothing.
    assert not training.record_run(run(job, 1, start, start + timedelta(seconds=600)))
    # The job resumed: run 2 is its own.
    resumed = start + timedelta(seconds=900)
    assert training.record_run(run(job, 2, resumed, resumed + timedelta(seconds=25)))
    assert not training.record_run(run(job, 2, resumed, resumed + timedelta(seconds=25)))
    pieces = billing.compute.training(job)
    assert [(p.run, p.seconds, p.cost) for p in pieces] == [(1, 60, 60 * PER_SECOND), (2, 25, 25 * PER_SECOND)]
    assert training.cpu_seconds(job) == 2.0 * 85
    (today,) = unit_economics(billing.money, billing.compute, TODAY, TODAY, "model")
    assert (today.key, today.training_seconds, today.cost) == ("base", 85, 85 * PER_SECOND)


def test_an_unpriced_shape_records_seconds_at_no_cost(billing: BillingService) -> None:
    training = TrainingBilling(billing)
    job = f"ftjob-{uuid.uuid4().hex[:12]}"
    start = MIDNIGHT + timedelta(seconds=10)
    unpriced = TrainingRun(job, 1, "org-a", "base", "cpu8", 8.0, 0.0, start, start + timedelta(seconds=9))
    assert training.record_run(unpriced)
    (piece,) = billing.compute.training(job)
    assert (piece.seconds, piece.cost, piece.price_version, piece.shape) == (9, 0, None, "cpu8")
    assert training.cpu_seconds(job) == 72.0
