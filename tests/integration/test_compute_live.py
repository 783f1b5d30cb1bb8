"""A dedicated deployment of the tiny model on a real Yun (its lifespan: the controller, a real llama.cpp
replica process, the compute meter and biller every second): billed the exact replica-seconds the registry
shows, and scaled to zero, its replica stopped, when its owner's credit runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.compute import audit
from yun.api import build_services, create_app
from yun.metering.compute import ceil_second, floor_second
from yun.settings import Settings
from yun.store.compute import ComputeRepository
from yun.store.money import COMPUTE_ENDPOINT
from yun.store.replicas import RegistryEntry

pytestmark = pytest.mark.asyncio(loop_scope="session")

PER_SECOND = 1_000_000  # $3.60 per replica-hour


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(predicate):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not reached in time"
        await asyncio.sleep(0.2)


async def test_billed_by_the_second_and_stopped_when_the_credit_runs_out(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        defaults={"chat": False, "embedding": False},
        engine={"parallel": 1, "context_per_slot": 512, "health_interval_s": 0.3},
        billing={"compute_interval_s": 1},
    )
    services = build_services(settings)
    org = services.org_service.create("acme-dedicated").id
    services.billing.credit(org, "0.008")  # 8 replica-seconds at the price below
    services.billing.set_compute_price("cpu1", "0.90", "3.60")
    services.catalog.add_local("tiny", tiny_model, "chat")
    # Deployed for its owner before the first start, so the catalog's model gets no shared deployment.
    services.deployments.create("tiny", deployment_id="acme-tiny", owner_org=org, replicas=1)
    app = create_app(settings, services)
    db, money = services.db, services.billing.money

    def replicas() -> list[RegistryEntry]:
        return services.registry.of_deployment("acme-tiny", include_stopped=True)

    def wanted() -> int:
        d = services.deployments.get("acme-tiny")
        assert d is not None
        return d.desired_replicas

    async with app.router.lifespan_context(app):
        await _until(lambda: any(e.state == "ready" for e in replicas()), "a ready replica")
        await _until(lambda: wanted() == 0, "scaled to zero")
        await _until(lambda: all(e.state == "stopped" for e in replicas()), "its replica stopped")

        def metered_to_the_stop() -> bool:
            [replica] = replicas()
            metered = ComputeRepository(db).intervals(replica_id=replica.id)
            return bool(metered) and metered[-1].final and not money.compute_holds()

        await _until(metered_to_the_stop, "metered to its stop")
        await asyncio.sleep(settings.billing.compute_interval_s * 2)  # a pass more: charged as far as credit goes

        d = services.deployments.get("acme-tiny")
        assert d is not None and "no credit" in d.message and (d.desired_replicas, d.min_replicas) == (0, 0)
        [replica] = replicas()
        assert replica.stopped_at is not None and replica.ready_at is not None
        intervals = ComputeRepository(db).intervals(deployment_id="acme-tiny")
        # Exactly the replica's life in the registry, in whole seconds: from placement to stop.
        life = int((floor_second(replica.stopped_at) - ceil_second(replica.created_at)).total_seconds())
        assert sum(i.seconds for i in intervals) == life > 0
        assert all(i.price == i.seconds * PER_SECOND and i.owner_org == org for i in intervals)
        audit(db, services.billing, org)
        balance, held = money.balance(org)
        assert held == 0 and balance >= 0
        billed = [i for i in intervals if i.charge_ref is not None]
        owed = [i for i in intervals if i.charge_ref is None]
        assert balance == 8 * PER_SECOND - sum(i.price for i in billed)
        # What is unbilled is owed because the balance could not cover it: never a charge past zero.
        assert not owed or owed[0].price > balance
        records = [r for r in money.usage_records(org, limit=1000) if r["endpoint"] == COMPUTE_ENDPOINT]
        assert sum(r["compute_seconds"] for r in records) == sum(i.seconds for i in billed)
