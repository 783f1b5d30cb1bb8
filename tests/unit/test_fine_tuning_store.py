"""Fine-tuning jobs, events and checkpoints: one contract on SQLite and PostgreSQL (the `org_db` fixture).
Scoped to their organization, paged newest first, status moves guarded; and the money around them:
training prices are versioned with token prices, and a job's hold is its runner's, not crash recovery's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from yun.billing.service import BillingService
from yun.billing.training import TrainingBilling
from yun.errors import NotFound, QuotaExceeded
from yun.store import Database, OrganizationRepository
from yun.store.fine_tuning import FineTuningRepository, JobRecord


def _job(job_id: str, org_id: str = "org-a", created: datetime | None = None) -> JobRecord:
    return JobRecord(
        id=job_id,
        org_id=org_id,
        key_id="key-1",
        model_id="tiny",
        training_file="file-1",
        seed=7,
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0},
        status="queued",
        created_at=created,
    )


@pytest.fixture
def repo(org_db: Database) -> FineTuningRepository:
    OrganizationRepository(org_db).get_or_create("org-b", "b")
    return FineTuningRepository(org_db)


def test_a_job_reads_back_for_its_organization_only(repo: FineTuningRepository) -> None:
    saved = repo.create(_job("ftjob-1"))
    assert saved == repo.get("org-a", "ftjob-1") and saved.created_at is not None and saved.created_at.tzinfo
    assert saved.hyperparameters["n_epochs"] == 3 and saved.status == "queued" and not saved.cancel_requested
    assert repo.get("org-b", "ftjob-1") is None and repo.get("org-a", "ftjob-nope") is None
    assert repo.request_cancel("org-b", "ftjob-1") is None and not repo.get_any("ftjob-1").cancel_requested
    with pytest.raises(NotFound):
        repo.events("org-b", "ftjob-1")
    with pytest.raises(NotFound):
        repo.checkpoints("org-b", "ftjob-1")


def test_jobs_are_paged_newest_first(repo: FineTuningRepository) -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(5):
        repo.create(_job(f"ftjob-{i}", created=t0 + timedelta(seconds=i)))
    repo.create(_job("ftjob-other", org_id="org-b", created=t0))
    first = repo.jobs("org-a", limit=2)
    assert [j.id for j in first.data] == ["ftjob-4", "ftjob-3"] and first.has_more
    rest = repo.jobs("org-a", after="ftjob-3", limit=10)
    assert [j.id for j in rest.data] == ["ftjob-2", "ftjob-1", "ftjob-0"] and not rest.has_more
    with pytest.raises(NotFound):
        repo.jobs("org-a", after="ftjob-other")


def test_status_moves_only_from_the_states_named(repo: FineTuningRepository) -> None:
    repo.create(_job("ftjob-1"))
    assert repo.transition("ftjob-1", "succeeded", from_=("running",)) is None
    running = repo.transition("ftjob-1", "running", from_=("queued",), runner="local:1", attempts=1)
    assert running is not None and (running.status, running.runner, running.attempts) == ("running", "local:1", 1)
    # Of a cancel and a finish racing, one wins: the loser sees None and changes nothing.
    assert repo.transition("ftjob-1", "cancelled", from_=("queued", "running")) is not None
    assert repo.transition("ftjob-1", "succeeded", from_=("running",), fine_tuned_model="ft:x") is None
    assert repo.get_any("ftjob-1").fine_tuned_model is None
    repo.update("ftjob-1", trained_tokens=1234, metadata={"a": "b"})
    got = repo.get_any("ftjob-1")
    assert got.trained_tokens == 1234 and got.metadata == {"a": "b"}


def test_events_and_checkpoints_newest_first_and_paged(repo: FineTuningRepository) -> None:
    repo.create(_job("ftjob-1"))
    events = [repo.add_event("ftjob-1", f"step {i}", type="metrics", data={"step": i}) for i in range(4)]
    page = repo.events("org-a", "ftjob-1", limit=3)
    assert [e.data for e in page.data] == [{"step": 3}, {"step": 2}, {"step": 1}] and page.has_more
    older = repo.events("org-a", "ftjob-1", after=page.data[-1].id)
    assert [e.id for e in older.data] == [events[0].id] and not older.has_more
    c1 = repo.add_checkpoint("ftjob-1", step=6, epoch=1, metrics={"train_loss": 1.5}, model="ft:m:1", adapter="a1")
    again = repo.add_checkpoint("ftjob-1", step=6, epoch=1, metrics={"train_loss": 9}, model="ft:m:1", adapter="a1")
    c2 = repo.add_checkpoint("ftjob-1", step=12, epoch=2, metrics={"train_loss": 0.5}, model="ft:m:2", adapter="a2")
    assert again == c1
    assert [c.id for c in repo.checkpoints("org-a", "ftjob-1").data] == [c2.id, c1.id]


def test_training_prices_are_versioned_and_kept_when_left_out(org_db: Database) -> None:
    billing = BillingService(org_db, "gw-test")
    assert billing.set_price("tiny", "1", "2").training_per_mtok is None
    v2 = billing.set_price("tiny", "1", "2", training_usd="3")
    v3 = billing.set_price("tiny", "5", "6")
    assert (v2.training_per_mtok, v3.training_per_mtok) == (3_000_000_000, 3_000_000_000)
    assert [p.training_per_mtok for p in billing.money.price_history("tiny")] == [None, 3_000_000_000, 3_000_000_000]


def test_a_job_hold_is_settled_once_by_its_runner_and_never_by_recovery(org_db: Database) -> None:
    billing = BillingService(org_db, "gw-test")
    billing.credit("org-a", "1")
    billing.set_price("tiny", "0", "0", training_usd="10")  # $10 per 1M trained tokens
    training = TrainingBilling(billing)
    with pytest.raises(QuotaExceeded):
        training.reserve("ftjob-big", "org-a", "key-1", "tiny", 200_000)  # $2 > $1
    hold = training.reserve("ftjob-1", "org-a", "key-1", "tiny", 30_000)  # $0.30
    found = training.hold_of("ftjob-1")
    assert hold.amount == 300_000_000 and found is not None and found.request_id == hold.request_id
    # A crash sweep that holds the database alone settles every other owner's holds, but not a job's.
    billing.recover(exclusive=True)
    assert training.hold_of("ftjob-1") is not None
    cost = training.settle(hold, 12_000, "cancelled", 5.0, "local")
    assert cost == 120_000_000 and training.hold_of("ftjob-1") is None
    assert training.settle(hold, 12_000, "cancelled", 5.0, "local") == 0  # exactly once
    balance = billing.balance("org-a")
    assert balance["balance_nanodollars"] == 1_000_000_000 - 120_000_000 and balance["held_nanodollars"] == 0


def test_an_event_and_the_job_progress_it_carries_are_one_transaction(repo: FineTuningRepository) -> None:
    # The runner records each trainer event with the offset past its line: a runner killed between two
    # events leaves its successor none to record twice, and an event that fails moves no offset.
    repo.create(_job("ftjob-1"))
    repo.add_event("ftjob-1", "Step 1", type="metrics", data={"step": 1}, changes={"progress_offset": 120})
    job = repo.get_any("ftjob-1")
    assert job.progress_offset == 120
    with pytest.raises(Exception, match="not JSON serializable"):
        repo.add_event("ftjob-1", "Step 2", data={"step": object()}, changes={"progress_offset": 240})
    assert repo.get_any("ftjob-1").progress_offset == 120
    assert [e.message for e in repo.events("org-a", "ftjob-1").data] == ["Step 1"]
