"""Gateway leases, on both databases, with two gateways (two `Database`s, as two processes have): crash
recovery settles a hold only once its owner is dead, never a live gateway's.

A gateway's lease is renewed by the gateway itself (api/lifespan.py); here a gateway "dies" by no longer
renewing it, which is all a SIGKILL changes for the others.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from yun.billing.service import BillingService, Estimate
from yun.store import Database, InstanceRepository, new_instance_id
from yun.store.money import HoldRecord

USD = 1_000_000_000
LIVE_LEASE_S = 3600.0


@pytest.fixture
def second_db(org_db: Database) -> Iterator[Database]:
    """The same database as `org_db`, through another engine: the second gateway's view of it."""
    other = Database(org_db.url)
    yield other
    other.dispose()


class Gateway:
    def __init__(self, db: Database) -> None:
        self.id = new_instance_id()
        self.instances = InstanceRepository(db)
        self.billing = BillingService(db, self.id)
        self.instances.register(self.id, "gw", "host", os.getpid(), LIVE_LEASE_S)

    def hold(self) -> HoldRecord:
        rid = f"req-{uuid.uuid4().hex}"
        return self.billing.reserve_blocking(rid, "org-a", "key-1", "m", "chat.completions", Estimate(10, 20))

    def stop_renewing(self) -> None:
        """What a crash does to the lease: its last renewal runs out (here: a renewal of no length)."""
        assert self.instances.renew(self.id, 0.0)
        row = self.instances.get(self.id)
        assert row is not None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)  # SQLite: naive UTC
        while datetime.now(UTC) <= expires:
            time.sleep(0.001)  # at most a clock tick


def open_ids(billing: BillingService) -> set[str]:
    return {h.request_id for h in billing.money.open_holds()}


def test_a_live_gateways_holds_are_never_recovered_a_dead_ones_only_after_its_lease(
    org_db: Database, second_db: Database
) -> None:
    a, b = Gateway(org_db), Gateway(second_db)
    a.billing.money.add_price("m", 1_000_000 * USD // 1000, 2_000_000 * USD // 1000, 0)
    a.billing.credit("org-a", 10)
    a_holds = {a.hold().request_id for _ in range(3)}
    b_holds = {b.hold().request_id for _ in range(2)}
    b.billing.record_progress(b.billing.money.open_holds(gateway_id=b.id)[0], 10, 7).result(timeout=30)

    # Both alive: recovery from either side, however often, settles nothing.
    for gw in (a, b, a):
        assert gw.billing.recover(orphaned_after_s=0.0) == 0
    assert open_ids(a.billing) == a_holds | b_holds

    b.stop_renewing()
    assert a.billing.recover() == 2  # b's holds, at their last progress; a's untouched
    assert open_ids(a.billing) == a_holds
    records = {r["request_id"]: r for r in a.billing.money.usage_records("org-a")}
    assert set(records) == b_holds and {r["status"] for r in records.values()} == {"interrupted"}
    assert sorted(r["completion_tokens"] for r in records.values()) == [0, 7]
    assert a.billing.recover() == 0  # once

    # b's row goes once it owns nothing open; a's stays.
    assert a.instances.forget_dead() == 1
    assert b.instances.get(b.id) is None and a.instances.get(a.id) is not None

    # The books: what b's requests cost is charged, a's holds are still held in full.
    balance, held = a.billing.money.balance("org-a")
    assert balance == a.billing.money.ledger_sum("org-a") == 10 * USD - sum(r["cost"] for r in records.values())
    assert held == sum(h.amount for h in a.billing.money.open_holds(gateway_id=a.id)) > 0


def test_a_lease_taken_for_dead_cannot_be_renewed(org_db: Database, second_db: Database) -> None:
    """The gateway learns it (and registers again: api/lifespan.py), rather than renewing a row it lost."""
    a, b = Gateway(org_db), Gateway(second_db)
    b.stop_renewing()
    assert a.instances.forget_dead() == 1
    assert b.instances.renew(b.id, LIVE_LEASE_S) is False
    assert b.instances.get(b.id) is None
    assert a.instances.renew(a.id, LIVE_LEASE_S) is True


def test_holds_of_an_owner_without_a_lease_wait_until_no_request_can_still_run(org_db: Database) -> None:
    """Holds written before leases existed carry a gateway name, not an instance: recovered only once
    they are older than `orphaned_after_s` (twice the request timeout in the server)."""
    a = Gateway(org_db)
    a.billing.credit("org-a", 1)
    legacy = BillingService(org_db, "myhost:8000")
    h = legacy.reserve_blocking(f"req-{uuid.uuid4().hex}", "org-a", "key-1", "m", "chat.completions", Estimate(1, 1))
    assert a.billing.recover(orphaned_after_s=3600) == 0
    assert a.billing.recover(orphaned_after_s=0) == 1
    assert h.request_id not in open_ids(a.billing)


def test_exclusive_recovery_settles_every_other_owner_and_never_its_own(org_db: Database, second_db: Database) -> None:
    """`yun serve` on SQLite, under the data-dir lock: no other gateway can be alive, whatever its lease."""
    a, b = Gateway(org_db), Gateway(second_db)
    a.billing.credit("org-a", 1)
    mine, theirs = a.hold(), b.hold()
    assert a.billing.recover(exclusive=True) == 1
    assert open_ids(a.billing) == {mine.request_id}
    assert a.instances.forget_dead(exclusive_of=a.id) == 1
    assert theirs.request_id not in open_ids(a.billing)


def test_a_clean_stop_settles_its_own_holds_then_ends_its_lease(org_db: Database, second_db: Database) -> None:
    a, b = Gateway(org_db), Gateway(second_db)
    a.billing.credit("org-a", 1)
    mine, theirs = a.hold(), b.hold()
    assert a.billing.settle_own() == 1
    a.instances.end(a.id)
    assert a.instances.get(a.id) is None
    assert open_ids(a.billing) == {theirs.request_id}
    assert mine.request_id in {r["request_id"] for r in a.billing.money.usage_records("org-a")}
