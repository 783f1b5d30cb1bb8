"""The compute meter on SQLite and PostgreSQL (the `org_db` fixture): replica-seconds from registry rows
with known times, written once whatever runs, crashes or races happen between."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, update

from tests.support.replicas import add_replica
from yun.metering.compute import ComputeMeter, _cut
from yun.store import Database, DeploymentRepository
from yun.store.compute import ComputeRepository
from yun.store.orm import ReplicaRow

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stop(db: Database, replica_id: str, when: datetime, state: str = "stopped") -> None:
    """What the controller writes when a replica stops holding compute."""
    with db.engine.begin() as c:
        c.execute(
            update(ReplicaRow)
            .where(ReplicaRow.id == replica_id)
            .values(state=state, stopped_at=when, endpoint=None, updated_at=when)
        )


def seconds(db: Database, replica_id: str) -> int:
    return sum(i.seconds for i in ComputeRepository(db).intervals(replica_id=replica_id))


def spans(db: Database, replica_id: str) -> list[tuple[datetime, datetime, bool]]:
    return [(i.started_at, i.ended_at, i.final) for i in ComputeRepository(db).intervals(replica_id=replica_id)]


@pytest.fixture
def meter(org_db: Database) -> ComputeMeter:
    DeploymentRepository(org_db).create("m-shared", deployment_id="shared-1")
    DeploymentRepository(org_db).create("m-ded", deployment_id="ded-1", owner_org="org-a", cpus=2, gpus=1)
    return ComputeMeter(org_db)


def test_a_running_replica_is_metered_as_it_runs_and_to_its_stop(org_db: Database, meter: ComputeMeter) -> None:
    add_replica(org_db, "ded-1", "r1", "ready", shape="cpu2-gpu1", node="node-b", created_at=at(0))
    assert [(i.seconds, i.final) for i in meter.meter(at(60))] == [(60, False)]
    assert [(i.seconds, i.final) for i in meter.meter(at(130.9))] == [(70, False)]  # cut at a whole second
    stop(org_db, "r1", at(150.4))
    assert [(i.seconds, i.final) for i in meter.meter(at(200))] == [(20, True)]
    assert meter.meter(at(900)) == []  # metered to its end: nothing more, however late
    assert spans(org_db, "r1") == [(at(0), at(60), False), (at(60), at(130), False), (at(130), at(150), True)]
    [first, *_] = ComputeRepository(org_db).intervals(replica_id="r1")
    assert (first.deployment_id, first.owner_org, first.model_id, first.shape, first.node) == (
        "ded-1",
        "org-a",
        "m-ded",
        "cpu2-gpu1",
        "node-b",
    )
    assert seconds(org_db, "r1") == 150


def test_exact_seconds_of_several_replicas_and_states(org_db: Database, meter: ComputeMeter) -> None:
    add_replica(org_db, "shared-1", "a", "ready", created_at=at(0.25))  # starts at the next whole second
    add_replica(org_db, "shared-1", "b", "starting", created_at=at(10), ready_at=None)
    add_replica(org_db, "shared-1", "c", "draining", created_at=at(20))
    add_replica(org_db, "shared-1", "d", "restarting", created_at=at(30))
    add_replica(org_db, "ded-1", "e", "failed", created_at=at(40), stopped_at=at(47.99), error="no memory")
    add_replica(org_db, "ded-1", "f", "stopped", created_at=at(50.2), stopped_at=at(50.9))  # under a second
    meter.meter(at(100.5))
    assert {r: seconds(org_db, r) for r in "abcdef"} == {"a": 99, "b": 90, "c": 80, "d": 70, "e": 7, "f": 0}
    # The sub-second replica has its (empty) last interval: it is done, like the failed one.
    assert spans(org_db, "f") == [(at(51), at(51), True)]
    assert {c.replica_id for c in ComputeRepository(org_db).candidates()} == {"a", "b", "c", "d"}


def test_no_double_metering_across_runs_a_crash_and_a_racing_meter(org_db: Database, meter: ComputeMeter) -> None:
    add_replica(org_db, "shared-1", "r1", "ready", created_at=at(0))
    meter.meter(at(60))
    assert meter.meter(at(60)) == []  # the same moment twice: nothing new

    # A crash in the middle of a run: its rows were inserted, its transaction never committed ...
    class Crash(Exception):
        pass

    def crash(_conn: object) -> None:
        raise Crash

    event.listen(org_db.engine, "commit", crash)
    try:
        with pytest.raises(Crash):
            ComputeMeter(org_db).meter(at(120))
    finally:
        event.remove(org_db.engine, "commit", crash)
    assert spans(org_db, "r1") == [(at(0), at(60), False)]

    # ... and the next meter (a new process) meters from the last written end: no gap.
    ComputeMeter(org_db).meter(at(180))
    assert spans(org_db, "r1") == [(at(0), at(60), False), (at(60), at(180), False)]

    # A meter that read the registry before another wrote: its late write overlaps nothing.
    stale = ComputeMeter(org_db)
    [candidate] = stale.repo.candidates()
    ComputeMeter(org_db).meter(at(240))
    late = _cut(candidate, at(230), None, "m-shared")
    assert stale.repo.record(late, now=at(230)) == []
    assert seconds(org_db, "r1") == 240
    ends = spans(org_db, "r1")
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:], strict=False))  # contiguous


def test_intervals_never_cross_a_utc_midnight(org_db: Database, meter: ComputeMeter) -> None:
    evening = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)
    add_replica(org_db, "shared-1", "r1", "ready", created_at=evening)
    written = meter.meter(evening + timedelta(days=2, seconds=75))
    assert [(i.day, i.seconds) for i in written] == [
        ("2026-03-01", 30),
        ("2026-03-02", 86400),
        ("2026-03-03", 86400),
        ("2026-03-04", 45),
    ]
    assert seconds(org_db, "r1") == 2 * 86400 + 75


def test_a_deleted_deployment_keeps_the_owner_it_was_metered_for(org_db: Database, meter: ComputeMeter) -> None:
    add_replica(org_db, "ded-1", "r1", "ready", created_at=at(0))
    meter.meter(at(30))
    stop(org_db, "r1", at(45))
    assert DeploymentRepository(org_db).delete("ded-1")
    [last] = meter.meter(at(60))
    assert (last.owner_org, last.model_id, last.seconds, last.final) == ("org-a", "m-ded", 15, True)
    # A replica of a deployment that was never metered and is gone: metered, as shared compute.
    add_replica(org_db, "gone", "r2", "stopped", created_at=at(0), stopped_at=at(5))
    [orphan] = meter.meter(at(60))
    assert (orphan.owner_org, orphan.model_id, orphan.seconds) == (None, "", 5)


async def test_run_once_meters_off_the_loop(org_db: Database, meter: ComputeMeter) -> None:
    add_replica(org_db, "shared-1", "r1", "ready", created_at=at(0))
    [i] = await meter.run_once(at(42))
    assert (i.replica_id, i.seconds, i.id is not None) == ("r1", 42, True)
