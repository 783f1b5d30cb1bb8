"""Dedicated deployments billed by the replica-second through the money path, on SQLite and PostgreSQL
(the `org_db` fixture): exact nanodollars, a hold ahead of every interval, exactly once across crashes,
never a negative balance, and scaled to zero when the credit runs out."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.support.compute import audit, charged, compute_records
from tests.support.replicas import add_replica
from yun.billing import BillingService
from yun.billing.compute import ComputeBilling
from yun.billing.statements import monthly_statement
from yun.cluster.base import Resources
from yun.errors import PaymentRequired, QuotaExceeded
from yun.store import Database, DeploymentRepository, OrganizationRepository
from yun.store.compute import ComputeRepository
from yun.store.money import COMPUTE_ENDPOINT
from yun.store.orm import ReplicaRow

USD = 1_000_000_000
PER_SECOND = 1_000_000
"""The dedicated price of `cpu1` below ($3.60 an hour): a replica-second costs $0.001."""
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=1)  # replica times are constructed; holds and charges happen now


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def billing(org_db: Database) -> BillingService:
    OrganizationRepository(org_db).get_or_create("default", "default")
    b = BillingService(org_db, "gw-test", internal_orgs=frozenset({"default"}))
    b.set_compute_price("cpu1", "1.80", "3.60")
    return b


@pytest.fixture
def deployments(org_db: Database) -> DeploymentRepository:
    return DeploymentRepository(org_db)


@pytest.fixture
def biller(org_db: Database, billing: BillingService, deployments: DeploymentRepository) -> ComputeBilling:
    return ComputeBilling(org_db, billing, deployments, interval_s=60)


def stop(db: Database, replica_id: str, when: datetime) -> None:
    with db.engine.begin() as c:
        c.execute(
            update(ReplicaRow)
            .where(ReplicaRow.id == replica_id)
            .values(state="stopped", stopped_at=when, updated_at=when)
        )


def test_a_dedicated_deployment_is_billed_exact_nanodollars_with_a_hold_ahead(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    billing.credit("org-a", "1")
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=2)
    add_replica(org_db, "ded", "r1", "starting", created_at=at(0), ready_at=None)
    add_replica(org_db, "ded", "r2", "ready", created_at=at(0))

    first = biller.bill(at(0))
    assert (first.settled, first.held) == (0, 1)
    assert billing.money.balance("org-a") == (USD, 2 * 60 * PER_SECOND)  # two replicas x 60 s, held ahead

    second = biller.bill(at(60))
    assert (second.metered, second.settled, second.charged, second.held) == (2, 1, 120 * PER_SECOND, 1)
    assert billing.money.balance("org-a") == (USD - 120 * PER_SECOND, 120 * PER_SECOND)

    # A pass that runs late: 2 x 70 s, more than the hold, the rest from the balance left available.
    assert biller.bill(at(130)).charged == 140 * PER_SECOND
    stop(org_db, "r2", at(150))
    assert biller.bill(at(190)).charged == (60 + 20) * PER_SECOND
    # One replica runs, two are asked for (the controller replaces the other): two are held for.
    assert billing.money.balance("org-a") == (USD - 340 * PER_SECOND, 120 * PER_SECOND)

    assert charged(org_db) == (340, 340 * PER_SECOND)
    records = compute_records(billing, "org-a")
    assert sorted((r["compute_seconds"], r["cost"]) for r in records) == sorted(
        [(120, 120 * PER_SECOND), (140, 140 * PER_SECOND), (80, 80 * PER_SECOND)]
    )
    assert {(r["model_id"], r["key_id"], r["prompt_tokens"], r["completion_tokens"]) for r in records} == {
        ("m", COMPUTE_ENDPOINT, 0, 0)
    }
    audit(org_db, billing, "org-a")

    st = monthly_statement(billing.money, "org-a", NOW.year, NOW.month)
    lines = {(i.model_id, i.kind): (i.quantity, i.amount) for i in st.line_items}
    assert lines == {("m", "replica_seconds"): (340, 340 * PER_SECOND)}
    assert st.reconciled and st.usage_charges == st.ledger_charges == 340 * PER_SECOND
    usage = billing.money.rollup_sums("org-a", NOW.date().isoformat(), NOW.date().isoformat(), "model_id")
    assert [(u["requests"], u["compute_seconds"], u["compute_cost"], u["cost"]) for u in usage] == [
        (0, 340, 340 * PER_SECOND, 340 * PER_SECOND)
    ]


def test_when_the_credit_runs_out_it_scales_to_zero_and_never_overdraws(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    billing.credit("org-a", "0.30")  # 300 replica-seconds
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=2, min_replicas=1, max_replicas=3)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    add_replica(org_db, "ded", "r2", "ready", created_at=at(0))
    biller.bill(at(0))
    biller.bill(at(60))  # 120 charged, the next 120 held: 60 left available
    assert deployments.get("ded").desired_replicas == 2  # type: ignore[union-attr]

    third = biller.bill(at(120))  # 120 more charged; the next interval's 120 cannot be held
    assert third.scaled_to_zero == ["ded"] and third.held == 0
    d = deployments.get("ded")
    assert d is not None and (d.desired_replicas, d.min_replicas) == (0, 0)
    assert "no credit" in d.message and "0.060000000 USD available" in d.message
    assert billing.money.balance("org-a") == (60 * PER_SECOND, 0)

    # The controller stops them, 30 s and 80 s later: metered intervals are charged whole, oldest first,
    # as far as the balance goes (30 of the 60 available); the other stays owed.
    stop(org_db, "r1", at(150))
    stop(org_db, "r2", at(200))
    fourth = biller.bill(at(205))
    assert fourth.charged == 30 * PER_SECOND and fourth.owed == {"ded": 80 * PER_SECOND}
    assert billing.money.balance("org-a") == (30 * PER_SECOND, 0)
    assert charged(org_db) == (270, 270 * PER_SECOND)
    audit(org_db, billing, "org-a")
    assert "0.080000000 USD of compute it used is unpaid" in deployments.get("ded").message  # type: ignore[union-attr]

    # Nothing more is charged without credit, and what is owed is charged first once credit arrives.
    assert biller.bill(at(300)).charged == 0
    billing.credit("org-a", "1")
    after = biller.bill(at(310))
    assert (after.charged, after.owed, after.held) == (80 * PER_SECOND, {}, 0)  # at zero: nothing to hold
    assert billing.money.balance("org-a") == (USD - 50 * PER_SECOND, 0)
    assert charged(org_db) == (350, 350 * PER_SECOND)
    audit(org_db, billing, "org-a")


def crash_in(biller: ComputeBilling, name: str) -> Callable[[], None]:
    """Make the biller's `name` step raise (a process dying there); returns the undo."""

    def dies(*_: object, **__: object) -> None:
        raise SystemExit("crashed")

    setattr(biller, name, dies)
    return lambda: delattr(biller, name)


@pytest.mark.parametrize("step", ["_write", "_reserve"])
def test_a_crash_anywhere_bills_every_second_once(
    org_db: Database,
    billing: BillingService,
    deployments: DeploymentRepository,
    biller: ComputeBilling,
    step: str,
) -> None:
    billing.credit("org-a", "10")
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=1)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    biller.bill(at(0))
    undo = crash_in(biller, step)
    with pytest.raises(SystemExit):
        # The deployment's failure is logged and retried by the next pass; a SystemExit is a dying process.
        biller.bill(at(60))
    undo()
    # Gateways' crash recovery never settles a compute hold: they are the biller's.
    assert billing.recover(exclusive=True) == 0
    reborn = ComputeBilling(org_db, billing, deployments, interval_s=60)
    reborn.bill(at(120))
    reborn.bill(at(180))
    assert charged(org_db) == (180, 180 * PER_SECOND)
    assert billing.money.balance("org-a") == (10 * USD - 180 * PER_SECOND, 60 * PER_SECOND)
    audit(org_db, billing, "org-a")


def test_a_deleted_deployment_is_settled_and_holds_nothing_more(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    billing.credit("org-a", "1")
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=1)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    biller.bill(at(0))
    stop(org_db, "r1", at(30))
    deployments.mark_deleting("ded")
    assert deployments.delete("ded")
    done = biller.bill(at(45))
    assert (done.charged, done.held, done.scaled_to_zero) == (30 * PER_SECOND, 0, [])
    assert billing.money.balance("org-a") == (USD - 30 * PER_SECOND, 0)
    assert biller.bill(at(300)).settled == 0
    audit(org_db, billing, "org-a")


def test_the_operators_own_dedicated_compute_is_metered_and_covered(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    deployments.create("m", deployment_id="ours", owner_org="default", replicas=1)
    add_replica(org_db, "ours", "r1", "ready", created_at=at(0))
    biller.bill(at(0))
    assert billing.money.balance("default") == (0, 0)  # holds nothing, never refused
    assert biller.bill(at(60)).charged == 60 * PER_SECOND
    assert billing.money.balance("default") == (0, 0)
    kinds = [e["kind"] for e in billing.money.ledger("default", at(-1), NOW + timedelta(days=1))]
    assert kinds == ["charge", "internal"]
    assert deployments.get("ours").desired_replicas == 1  # type: ignore[union-attr]
    audit(org_db, billing, "default")


def test_shared_compute_is_never_billed(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    deployments.create("m", deployment_id="shared", replicas=1)
    add_replica(org_db, "shared", "r1", "ready", created_at=at(0))
    biller.bill(at(0))
    done = biller.bill(at(60))
    assert (done.metered, done.settled, done.held) == (1, 0, 0)
    [interval] = ComputeRepository(org_db).intervals()
    assert (interval.owner_org, interval.cost, interval.price, interval.charge_ref) == (None, 30 * PER_SECOND, 0, None)


def test_compute_past_its_hold_is_refused_whole_when_the_balance_cannot_cover_it(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    """The store's own guard, without the biller's arithmetic: a settlement that would take more than the
    hold plus what is available writes nothing at all (not its flip, not the intervals' marks)."""
    billing.credit("org-a", "0.05")
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=1)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    biller.bill(at(0))  # the first 60 s cannot be held (50 available): scaled to zero at once
    assert deployments.get("ded").desired_replicas == 0  # type: ignore[union-attr]
    biller.meter.meter(at(100))
    [interval] = ComputeRepository(org_db).unbilled()["ded"]
    hold = biller._reserve(biller._deployments()[0], 10 * PER_SECOND)
    with pytest.raises(QuotaExceeded):
        biller._write(hold, "ded", [interval], internal=False)  # 100 > 10 held + 40 available
    assert [h.request_id for h in billing.money.open_holds(endpoint=COMPUTE_ENDPOINT)] == [hold.request_id]
    assert ComputeRepository(org_db).unbilled()["ded"] == [interval]
    assert billing.money.balance("org-a") == (50 * PER_SECOND, 10 * PER_SECOND)
    audit(org_db, billing, "org-a")


def test_a_balance_held_meanwhile_falls_back_to_what_the_hold_covers(
    org_db: Database,
    billing: BillingService,
    deployments: DeploymentRepository,
    biller: ComputeBilling,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    billing.credit("org-a", "1")
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=1)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    add_replica(org_db, "ded", "r2", "ready", created_at=at(0))
    biller.bill(at(0))  # two run: 120 held
    # The balance moves between the biller's read of it and its settlement (here a debit; a request's
    # hold in another gateway does the same): the settlement it sized no longer passes the guard.
    stale = billing.money.balance("org-a")
    billing.credit("org-a", "-0.87", kind="adjustment")  # 130 left, 120 of it held: 10 available
    monkeypatch.setattr(billing.money, "balance", lambda org: stale)
    done = biller.bill(at(90))  # 180 metered (two intervals of 90): both fit the hold and the stale balance
    monkeypatch.undo()
    # Refused by the guard, it settled what the hold alone covers: one interval; the other is owed.
    assert done.charged == 90 * PER_SECOND and done.owed == {"ded": 90 * PER_SECOND}
    assert billing.money.balance("org-a") == (40 * PER_SECOND, 0)
    audit(org_db, billing, "org-a")


def test_two_billers_racing_bill_every_second_once(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    """Two controllers' billers (a stale one not yet stepped down) running the same passes at once."""
    billing.credit("org-a", "10")
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=2)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    add_replica(org_db, "ded", "r2", "ready", created_at=at(0))
    other = ComputeBilling(org_db, BillingService(org_db, "gw-other"), deployments, interval_s=60)
    for second in (0, 60, 120, 180):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ComputeBilling.bill, [biller, other], [at(second)] * 2))
    biller.bill(at(240))
    assert charged(org_db) == (2 * 240, 2 * 240 * PER_SECOND)
    assert billing.money.balance("org-a")[0] == 10 * USD - 2 * 240 * PER_SECOND
    audit(org_db, billing, "org-a")


def test_the_first_interval_is_held_before_the_replicas_are_placed(
    org_db: Database, billing: BillingService, deployments: DeploymentRepository, biller: ComputeBilling
) -> None:
    """Issue 11: creating (or scaling up) a dedicated deployment holds its first interval before the
    controller places anything; the pass that follows carries on from that hold (no second one)."""
    billing.credit("org-a", "1")
    hold = biller.hold_ahead("ded", "org-a", "m", Resources(cpus=1.0), 2)
    assert hold is not None and hold.amount == 2 * 60 * PER_SECOND
    assert billing.money.balance("org-a") == (USD, 120 * PER_SECOND)
    deployments.create("m", deployment_id="ded", owner_org="org-a", replicas=2)
    add_replica(org_db, "ded", "r1", "ready", created_at=at(0))
    add_replica(org_db, "ded", "r2", "ready", created_at=at(0))

    first = biller.bill(at(0))
    assert (first.settled, first.held) == (0, 0), "its first interval is already held"
    assert billing.money.balance("org-a") == (USD, 120 * PER_SECOND)
    second = biller.bill(at(60))  # the first interval, charged from that hold; the next one held
    assert (second.settled, second.charged, second.held) == (1, 120 * PER_SECOND, 1)
    assert billing.money.balance("org-a") == (USD - 120 * PER_SECOND, 120 * PER_SECOND)

    # Scaled up by one: that replica's first interval is held too, before it is placed.
    more = biller.hold_ahead("ded", "org-a", "m", Resources(cpus=1.0), 1)
    assert more is not None and billing.money.balance("org-a") == (USD - 120 * PER_SECOND, 180 * PER_SECOND)
    deployments.scale("ded", 3, max_replicas=3)
    add_replica(org_db, "ded", "r3", "ready", created_at=at(60))
    third = biller.bill(at(120))  # both holds settled (one charged, one released), one for 3 replicas taken
    assert (third.settled, third.charged, third.held) == (2, 180 * PER_SECOND, 1)
    assert billing.money.balance("org-a") == (USD - 300 * PER_SECOND, 180 * PER_SECOND)
    assert charged(org_db) == (300, 300 * PER_SECOND)
    audit(org_db, billing, "org-a")


def test_an_owner_that_cannot_cover_the_first_interval_is_refused_and_holds_nothing(
    org_db: Database, billing: BillingService, biller: ComputeBilling
) -> None:
    billing.credit("org-a", "0.10")  # 100 replica-seconds: 2 x 60 s cannot be held
    with pytest.raises(PaymentRequired) as refused:
        biller.hold_ahead("ded", "org-a", "m", Resources(cpus=1.0), 2)
    assert isinstance(refused.value, QuotaExceeded) and refused.value.code == "insufficient_quota"
    assert "first 60s of 2 dedicated replica(s)" in refused.value.message and refused.value.param == "owner"
    assert billing.money.balance("org-a") == (USD // 10, 0)
    one = biller.hold_ahead("ded", "org-a", "m", Resources(cpus=1.0), 1)  # one replica's interval fits
    assert one is not None and billing.money.balance("org-a") == (USD // 10, 60 * PER_SECOND)
    biller.release(one, "ded")  # its deployment was not made after all: nothing charged
    assert billing.money.balance("org-a") == (USD // 10, 0) and charged(org_db) == (0, 0)
    # Nothing to hold: shared, the operator's own organization, no replica added, an unpriced shape.
    assert biller.hold_ahead("shared", None, "m", Resources(cpus=1.0), 2) is None
    assert biller.hold_ahead("own", "default", "m", Resources(cpus=1.0), 2) is None
    assert biller.hold_ahead("ded", "org-a", "m", Resources(cpus=1.0), 0) is None
    assert biller.hold_ahead("ded", "org-a", "m", Resources(cpus=64.0), 2) is None
