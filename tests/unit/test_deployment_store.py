"""The deployment repository, one contract on SQLite and PostgreSQL (the `org_db` fixture)."""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert

from yun.errors import InvalidRequest, NotFound
from yun.store import Database, DeploymentRepository
from yun.store.deployments import replica_bounds
from yun.store.orm import ReplicaRow

ENGINE_SECRET = "engine-secret-7f3a9c-never-shown"


def add_replica(db: Database, deployment_id: str, replica_id: str, state: str, **columns: Any) -> None:
    """One replica-registry row, as the controller's registry writes them (this repository only reads them)."""
    now = datetime.now(UTC)
    row = {
        "id": replica_id,
        "deployment_id": deployment_id,
        "generation": 1,
        "backend": "local",
        "shape": "cpu1",
        "node": "node-a",
        "endpoint": "http://127.0.0.1:9" if state == "ready" else None,
        "secret": ENGINE_SECRET,
        "state": state,
        "error": None,
        "restarts": 0,
        "created_at": now,
        "ready_at": now if state == "ready" else None,
        "stopped_at": now if state == "stopped" else None,
        "updated_at": now,
        **columns,
    }
    with db.engine.begin() as c:
        c.execute(insert(cast(Table, ReplicaRow.__table__)).values(**row))


@pytest.fixture
def repo(org_db: Database) -> DeploymentRepository:
    return DeploymentRepository(org_db)


def test_create_fills_in_defaults_and_reads_back_the_same(repo: DeploymentRepository) -> None:
    before = datetime.now(UTC)
    d = repo.create("m1")
    assert re.fullmatch(r"dep-[0-9a-f]{12}", d.id)
    assert (d.model_id, d.engine, d.owner_org, d.state, d.message, d.generation) == (
        "m1",
        "llamacpp",
        None,
        "active",
        "",
        1,
    )
    assert (d.min_replicas, d.desired_replicas, d.max_replicas) == (1, 1, 1)
    assert (d.cpus, d.gpus, d.memory_mb, d.threads, d.parallel, d.context, d.command) == (
        1.0,
        0.0,
        0,
        None,
        None,
        None,
        None,
    )
    assert d.created_at.tzinfo is not None and d.created_at >= before and d.updated_at == d.created_at
    assert repo.get(d.id) == d
    assert repo.get("dep-missing") is None


def test_create_with_everything(repo: DeploymentRepository) -> None:
    d = repo.create(
        "m1",
        deployment_id="acme-qwen",
        engine="vllm",
        owner_org="org-a",
        replicas=2,
        min_replicas=0,
        max_replicas=4,
        cpus=2.5,
        gpus=1,
        memory_mb=8192,
        threads=4,
        parallel=8,
        context=2048,
        command=["fake-engine", "--port", "{port}"],
        autoscale={"target_inflight": 4},
        idle_timeout_s=300.0,
    )
    got = repo.get("acme-qwen")
    assert got == d
    assert (got.engine, got.owner_org, got.min_replicas, got.desired_replicas, got.max_replicas) == (
        "vllm",
        "org-a",
        0,
        2,
        4,
    )
    assert (got.cpus, got.gpus, got.memory_mb, got.threads, got.parallel, got.context) == (2.5, 1.0, 8192, 4, 8, 2048)
    assert got.command == ("fake-engine", "--port", "{port}") and got.autoscale == {"target_inflight": 4}
    assert got.idle_timeout_s == 300.0
    with pytest.raises(InvalidRequest, match="already exists") as e:
        repo.create("m2", deployment_id="acme-qwen")
    assert e.value.param == "id"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((None, None, None), (1, 1, 1)),
        ((3, None, None), (1, 3, 3)),
        ((0, None, None), (0, 0, 1)),
        ((None, 0, 4), (0, 1, 4)),
        ((None, 2, 4), (2, 2, 4)),
        ((None, None, 5), (1, 1, 5)),
        ((2, 0, 2), (0, 2, 2)),
    ],
)
def test_replica_bounds_fill_in_what_was_not_given(given: tuple[int | None, ...], expected: tuple[int, ...]) -> None:
    replicas, lo, hi = given
    assert replica_bounds(replicas, lo, hi) == expected


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ((5, 1, 3), "replicas"),
        ((0, 1, 3), "replicas"),
        ((None, 4, 2), "min"),
        ((None, -1, None), "min"),
        ((None, 0, 0), "max"),
    ],
)
def test_replica_bounds_refuse_what_cannot_hold(given: tuple[int | None, ...], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        replica_bounds(*given)
    assert e.value.param == param


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"engine": "tgi"}, "engine"),
        ({"deployment_id": "bad id/"}, "id"),
        ({"replicas": 3, "max_replicas": 2}, "replicas"),
        ({"command": ["engine", "--api-key", "{secret}"]}, "command"),
    ],
)
def test_create_refuses_bad_input(repo: DeploymentRepository, kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        repo.create("m1", **kwargs)  # type: ignore[arg-type]
    assert e.value.param == param
    assert repo.list() == []


def test_list_by_model_and_owner_oldest_first(repo: DeploymentRepository) -> None:
    shared = repo.create("m1")
    dedicated = repo.create("m1", owner_org="org-a")
    other = repo.create("m2", owner_org="org-a")
    assert [d.id for d in repo.list()] == [shared.id, dedicated.id, other.id]
    assert [d.id for d in repo.list(model_id="m1")] == [shared.id, dedicated.id]
    assert [d.id for d in repo.list(owner_org="org-a")] == [dedicated.id, other.id]
    assert [d.id for d in repo.list(model_id="m2", owner_org="org-a")] == [other.id]
    assert repo.list(model_id="nope") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("engine", "vllm"),
        ("threads", 8),
        ("parallel", 2),
        ("context", 8192),
        ("cpus", 4.0),
        ("gpus", 1.0),
        ("memory_mb", 1024),
        ("command", ("my-engine", "{model}")),
    ],
)
def test_changing_how_replicas_run_bumps_the_generation(repo: DeploymentRepository, field: str, value: object) -> None:
    d = repo.create("m1")
    updated = repo.update(d.id, **{field: value})
    assert getattr(updated, field) == value and updated.generation == 2
    assert updated.updated_at >= d.updated_at
    assert repo.get(d.id) == updated
    assert repo.update(d.id, **{field: value}).generation == 2, "the same value again is no change"


def test_what_does_not_restart_replicas_keeps_the_generation(repo: DeploymentRepository) -> None:
    d = repo.create("m1", threads=4)
    assert repo.update(d.id, idle_timeout_s=60.0, autoscale={"target_inflight": 2}).generation == 1
    assert repo.scale(d.id, max_replicas=3).generation == 1
    several = repo.update(d.id, threads=None, parallel=2, context=1024)  # None: back to the default
    assert (several.threads, several.parallel, several.context, several.generation) == (None, 2, 1024, 2)


def test_none_puts_a_field_back_to_its_default(repo: DeploymentRepository) -> None:
    d = repo.create("m1", engine="vllm", cpus=4, gpus=1, memory_mb=512, threads=8, command=["x"], autoscale={"a": 1})
    reset = repo.update(
        d.id, engine=None, cpus=None, gpus=None, memory_mb=None, threads=None, command=None, autoscale=None
    )
    assert (reset.engine, reset.cpus, reset.gpus, reset.memory_mb, reset.threads, reset.command) == (
        "llamacpp",
        1.0,
        0.0,
        0,
        None,
        None,
    )
    assert reset.autoscale == {} and reset.generation == 2
    assert repo.update(d.id, cpus=None).generation == 2


def test_update_refuses_what_it_cannot_change(repo: DeploymentRepository) -> None:
    d = repo.create("m1")
    for field in ("model_id", "owner_org", "generation", "state", "desired_replicas"):
        with pytest.raises(InvalidRequest) as e:
            repo.update(d.id, **{field: "x"})
        assert e.value.param == field
    with pytest.raises(InvalidRequest) as e:
        repo.update(d.id, engine="tgi")
    assert e.value.param == "engine"
    with pytest.raises(NotFound, match="dep-missing"):
        repo.update("dep-missing", threads=2)
    assert repo.get(d.id) == d


def test_scale_within_bounds_and_bounds_clamp_the_count(repo: DeploymentRepository) -> None:
    d = repo.create("m1", min_replicas=1, max_replicas=4, replicas=2)
    assert repo.scale(d.id, 4).desired_replicas == 4
    clamped = repo.scale(d.id, max_replicas=3)
    assert (clamped.min_replicas, clamped.desired_replicas, clamped.max_replicas) == (1, 3, 3)
    raised = repo.scale(d.id, min_replicas=3, max_replicas=5)
    assert (raised.min_replicas, raised.desired_replicas, raised.max_replicas) == (3, 3, 5)
    zero = repo.scale(d.id, 0, min_replicas=0)
    assert (zero.min_replicas, zero.desired_replicas, zero.max_replicas) == (0, 0, 5)
    for bad, param in (
        ({"replicas": 6}, "replicas"),
        ({"min_replicas": 6}, "min"),
        ({"max_replicas": 0}, "max"),
        ({}, "replicas"),
    ):
        with pytest.raises(InvalidRequest) as e:
            repo.scale(d.id, **bad)  # type: ignore[arg-type]
        assert e.value.param == param
    assert repo.get(d.id) == zero
    with pytest.raises(NotFound):
        repo.scale("dep-missing", 1)
    # The autoscaler's compare-and-set: a count that moved since it was read is left as it is.
    assert repo.scale(d.id, 2, if_desired=1).desired_replicas == 0
    assert repo.scale(d.id, 2, if_desired=0).desired_replicas == 2


def test_concurrent_updates_and_scales_all_land(repo: DeploymentRepository) -> None:
    """Each change locks its row: eight threads changing threads and scaling at once lose none of it."""
    d = repo.create("m1", max_replicas=100)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            repo.update(d.id, threads=i + 1)
            repo.scale(d.id, max_replicas=100 + i + 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert repo.get(d.id).generation == 1 + 8  # type: ignore[union-attr]


def test_messages_do_not_move_updated_at(repo: DeploymentRepository) -> None:
    d = repo.create("m1")
    assert repo.set_message(d.id, "replica r1 failed: out of memory")
    got = repo.get(d.id)
    assert got is not None and got.message == "replica r1 failed: out of memory" and got.updated_at == d.updated_at
    assert not repo.set_message("dep-missing", "x")


def test_deleting_then_delete(repo: DeploymentRepository) -> None:
    d = repo.create("m1")
    gone = repo.mark_deleting(d.id)
    assert gone.state == "deleting" and repo.mark_deleting(d.id) == gone  # idempotent
    with pytest.raises(InvalidRequest, match="being deleted"):
        repo.scale(d.id, 1)
    with pytest.raises(InvalidRequest, match="being deleted"):
        repo.update(d.id, threads=1)
    assert repo.delete(d.id)
    assert repo.get(d.id) is None and not repo.delete(d.id)
    with pytest.raises(NotFound):
        repo.mark_deleting(d.id)


def test_replicas_are_read_without_their_secret(repo: DeploymentRepository, org_db: Database) -> None:
    d = repo.create("m1")
    other = repo.create("m2")
    add_replica(org_db, d.id, "r1", "ready", node="n1", endpoint="http://10.0.0.1:8001", restarts=2)
    add_replica(org_db, d.id, "r2", "failed", error="engine exited with status 1", generation=2)
    add_replica(org_db, d.id, "r0", "stopped")
    add_replica(org_db, other.id, "r3", "ready")
    add_replica(org_db, other.id, "r4", "starting")
    replicas = repo.replicas(d.id)
    assert [(r.id, r.state) for r in replicas] == [("r1", "ready"), ("r2", "failed")]
    ready, failed = replicas
    assert (ready.node, ready.endpoint, ready.restarts, ready.generation) == ("n1", "http://10.0.0.1:8001", 2, 1)
    assert ready.ready_at is not None and ready.ready_at.tzinfo is not None and ready.created_at.tzinfo is not None
    assert (failed.error, failed.generation, failed.ready_at) == ("engine exited with status 1", 2, None)
    assert all("secret" not in dataclasses.asdict(r) for r in replicas)
    assert ENGINE_SECRET not in repr(replicas)
    assert repo.replicas("dep-missing") == []
    assert repo.ready_counts() == {d.id: 1, other.id: 1}
    assert repo.ready_counts([other.id]) == {other.id: 1}
