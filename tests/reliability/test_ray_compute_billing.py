"""Compute sold by the second on the real two-node Ray cluster (issue 11): a dedicated deployment whose
replica is a Ray actor is metered and charged to its owner every billing interval, through a SIGKILL of
the active controller (the standby adopts the actor and goes on billing it: no second left out, none
billed twice), until the deployment is deleted and its replica metered to its stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import MODEL, MoneyServer, audit_ledger
from tests.support.raycluster import RayCluster
from tests.support.server import YunServer
from tests.support.tiny_model import tiny_model_path
from tests.support.yun_ray import YunOnRay, until
from yun.cluster.backends.ray import ACTOR_PREFIX, NAMESPACE
from yun.metering.compute import ceil_second, floor_second
from yun.store import Database
from yun.store.compute import ComputeInterval, ComputeRepository
from yun.store.money import COMPUTE_ENDPOINT
from yun.store.replicas import RegistryEntry, ReplicaRepository
from yun.store.secrets import load_key

pytestmark = pytest.mark.reliability

TAKEN_OVER = "this process is the active controller"
DEPLOYMENT = "acme-dedicated"
PER_SECOND = 1_000_000  # $3.60 per replica-hour


def test_a_dedicated_ray_replica_is_billed_every_second_of_its_life_across_a_controller_failover(
    tmp_path: Path, pg_url: str, ray_cluster: RayCluster
) -> None:
    yun = YunOnRay(tmp_path, pg_url, ray_cluster)
    yun.env["YUN_BILLING__COMPUTE_INTERVAL_S"] = "1"
    active = yun.server("controller-a", "controller", server_class=MoneyServer)
    servers: list[YunServer] = [active]
    db = Database(pg_url)
    try:
        active.start()
        active.yun("models", "add", MODEL, "--file", str(tiny_model_path()))
        until(lambda: any(e.state == "ready" for e in yun.replicas(MODEL)) or None, "the shared deployment")
        active.yun("deployments", "delete", MODEL)  # only the dedicated one below holds compute
        active.yun("prices", "compute", "set", "cpu0.5", "--cost", "0.90", "--price", "3.60")
        org = active.new_org("acme", "10")
        key = active.new_key(org)
        active.yun("deployments", "create", MODEL, "--id", DEPLOYMENT, "--owner", org, "--cpus", "0.5")
        (replica,) = until(lambda: yun.settled(DEPLOYMENT, 1), "the dedicated replica is ready")
        # Tenants read their usage from a gateway (controllers serve the control plane only).
        gateway = yun.server("gateway", "gateway", server_class=MoneyServer, admin_key=active.admin_key)
        servers.append(gateway)
        gateway.start()
        assert ray_cluster.named_actors(NAMESPACE) == [ACTOR_PREFIX + replica.id]

        def charged_seconds() -> int:
            return sum(r["compute_seconds"] for r in _compute_records(gateway, key))

        until(lambda: charged_seconds() >= 3 or None, "three replica-seconds charged")

        standby = yun.server("controller-b", "controller", server_class=MoneyServer, admin_key=active.admin_key)
        servers.append(standby)
        standby.start()
        active.kill9()
        until(lambda: TAKEN_OVER in standby.stderr() or None, "the standby took over")
        before = charged_seconds()
        until(lambda: charged_seconds() >= before + 3 or None, "the standby charges on")
        assert [e.id for e in yun.replicas(DEPLOYMENT)] == [replica.id]  # adopted, not placed again

        standby.yun("deployments", "delete", DEPLOYMENT)
        until(lambda: ray_cluster.named_actors(NAMESPACE) == [] or None, "the replica's actor is gone")
        compute = ComputeRepository(db)

        def metered_to_its_stop() -> list[ComputeInterval] | None:
            intervals = compute.intervals(deployment_id=DEPLOYMENT)
            done = intervals and intervals[-1].final and all(i.charge_ref is not None for i in intervals)
            return intervals if done else None

        intervals = until(metered_to_its_stop, "every interval metered and charged")
        stopped = _entry(db, standby, replica.id)
        assert stopped.stopped_at is not None
        # Every second of its life, from placement to stop, once: across both controllers.
        life = int((floor_second(stopped.stopped_at) - ceil_second(stopped.created_at)).total_seconds())
        assert sum(i.seconds for i in intervals) == life > 0
        starts = [i.started_at for i in intervals]
        assert starts == sorted(starts)
        assert all(a.ended_at == b.started_at for a, b in zip(intervals, intervals[1:], strict=False))
        assert all(i.price == i.seconds * PER_SECOND and i.owner_org == org for i in intervals)
        assert charged_seconds() == life
        assert sum(r["cost_nanodollars"] for r in _compute_records(gateway, key)) == life * PER_SECOND
        assert gateway.org_get(key, "balance")["held_nanodollars"] == 0
        audit_ledger(pg_url)
    finally:
        for server in servers:
            server.kill9()
        ray_cluster.named_actors(NAMESPACE, kill_prefix=ACTOR_PREFIX)
        db.dispose()


def _compute_records(server: MoneyServer, key: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = server.org_get(key, "usage/records?limit=1000")["data"]
    return [r for r in records if r["endpoint"] == COMPUTE_ENDPOINT]


def _entry(db: Database, server: YunServer, replica_id: str) -> RegistryEntry:
    repository = ReplicaRepository(db, load_key(server.env["YUN_SECRETS__KEY"], Path("/nonexistent")))
    return next(e for e in repository.of_deployment(DEPLOYMENT, include_stopped=True) if e.id == replica_id)
