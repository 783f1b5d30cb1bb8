"""Compute prices per resource shape on SQLite and PostgreSQL (the `org_db` fixture): versions only ever
added, and every metered interval priced at the version current when it was metered."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from tests.support.replicas import add_replica
from yun.billing import BillingService
from yun.errors import InvalidRequest
from yun.metering.compute import ComputeMeter, per_replica_hour
from yun.store import Database, DeploymentRepository
from yun.store.compute import MAX_PRICE_PER_HOUR, ComputeRepository

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def billing(org_db: Database) -> BillingService:
    return BillingService(org_db, "gw-test")


def test_prices_are_versioned_per_shape_and_one_left_out_keeps_its_value(billing: BillingService) -> None:
    first = billing.set_compute_price("cpu1", "0.05", "0.12")
    assert (first.shape, first.version, first.cost_per_hour, first.price_per_hour) == (
        "cpu1",
        1,
        50_000_000,
        120_000_000,
    )
    assert billing.set_compute_price("cpu1", None, "0.15").cost_per_hour == 50_000_000
    assert billing.set_compute_price("cpu1", "0.06", None).price_per_hour == 150_000_000
    only_cost = billing.set_compute_price("cpu8-gpu1", "2.50", None)
    assert (only_cost.version, only_cost.cost_per_hour, only_cost.price_per_hour) == (1, 2_500_000_000, 0)
    history = billing.compute.price_history("cpu1")
    assert [(p.version, p.cost_per_hour, p.price_per_hour) for p in history] == [
        (1, 50_000_000, 120_000_000),
        (2, 50_000_000, 150_000_000),
        (3, 60_000_000, 150_000_000),
    ]
    current = billing.compute.prices()
    assert {s: p.version for s, p in current.items()} == {"cpu1": 3, "cpu8-gpu1": 1}
    assert billing.compute.price_history("cpu2") == []


@pytest.mark.parametrize(
    ("cost", "price", "param"),
    [(None, None, "cost"), ("-0.01", None, "cost"), (None, "-1", "price"), ("x", None, "amount")],
)
def test_bad_prices_are_refused(billing: BillingService, cost: str | None, price: str | None, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        billing.set_compute_price("cpu1", cost, price)
    assert refused.value.param == param


def test_the_store_refuses_prices_past_its_bound(org_db: Database) -> None:
    repo = ComputeRepository(org_db)
    repo.add_price("cpu1", MAX_PRICE_PER_HOUR, MAX_PRICE_PER_HOUR)
    with pytest.raises(InvalidRequest):
        repo.add_price("cpu1", MAX_PRICE_PER_HOUR + 1, 0)


def test_per_replica_hour_rounds_up_to_the_nanodollar() -> None:
    for seconds, per_hour in [(1, 1), (60, 50_000_000), (7, 123_456_789), (86_400, MAX_PRICE_PER_HOUR), (0, 9)]:
        assert per_replica_hour(seconds, per_hour) == math.ceil(Fraction(seconds * per_hour, 3600))


def test_intervals_are_priced_when_metered_and_keep_their_version(org_db: Database, billing: BillingService) -> None:
    deployments = DeploymentRepository(org_db)
    deployments.create("m", deployment_id="shared")
    deployments.create("m", deployment_id="ded", owner_org="org-a")
    add_replica(org_db, "shared", "s1", "ready", created_at=at(0))
    add_replica(org_db, "ded", "d1", "ready", created_at=at(0))
    add_replica(org_db, "ded", "d2", "ready", shape="cpu4", created_at=at(0))  # a shape without prices: free
    meter = ComputeMeter(org_db)
    meter.meter(at(7))  # before any price: free, still metered
    billing.set_compute_price("cpu1", "0.05", "0.123456789")
    meter.meter(at(67))
    billing.set_compute_price("cpu1", "0.07", "0.20")
    meter.meter(at(127))
    got = [(i.replica_id, i.seconds, i.price_version, i.cost, i.price) for i in ComputeRepository(org_db).intervals()]

    def ceil(seconds: int, per_hour: int) -> int:
        return math.ceil(Fraction(seconds * per_hour, 3600))

    assert sorted(got) == sorted(
        [
            ("s1", 7, None, 0, 0),  # before any price: free, still metered
            ("d1", 7, None, 0, 0),
            ("d2", 7, None, 0, 0),
            ("s1", 60, 1, ceil(60, 50_000_000), 0),  # shared compute: the operator's cost, nobody's price
            ("d1", 60, 1, ceil(60, 50_000_000), ceil(60, 123_456_789)),
            ("d2", 60, None, 0, 0),
            ("s1", 60, 2, ceil(60, 70_000_000), 0),  # a new version prices what is metered after it
            ("d1", 60, 2, ceil(60, 70_000_000), ceil(60, 200_000_000)),
            ("d2", 60, None, 0, 0),
        ]
    )
