"""Issue 11: a dedicated deployment's first billing interval is held before anything runs. Through the
admin API of a real Yun (its lifespan: controller, biller): an owner that cannot cover the first interval
gets a 402 `insufficient_quota` at create or scale time, and nothing is recorded or placed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from yun.api import build_services, create_app
from yun.api.control import DeploymentRecords
from yun.api.services import Services
from yun.errors import PaymentRequired
from yun.settings import Settings
from yun.tenancy import DEFAULT_ORG

pytestmark = pytest.mark.asyncio(loop_scope="session")

PER_SECOND = 1_000_000  # $3.60 per replica-hour
SHAPE = {"cpus": 1, "memory_mb": 64}  # cpu1-mem64: a shape of this test's own


def _priced(tmp_path: Path, tiny_model: Path, org_name: str) -> tuple[Settings, Services, str]:
    """Yun's services with the tiny model, the shape priced at $3.60 per replica-hour and an organization
    holding $0.05: 50 replica-seconds, not one replica's first 60 s interval."""
    settings = Settings(
        data_dir=tmp_path,
        defaults={"chat": False, "embedding": False},
        engine={"parallel": 1, "context_per_slot": 512},
        billing={"compute_interval_s": 60},
    )
    services = build_services(settings)
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    org = services.org_service.create(org_name).id
    services.billing.credit(org, "0.05")
    services.billing.set_compute_price("cpu1-mem64", "0.90", "3.60")
    services.catalog.add_local("tiny", tiny_model, "chat")
    return settings, services, org


async def test_a_dedicated_deployment_its_owner_cannot_cover_is_refused_before_anything_runs(
    tmp_path: Path, tiny_model: Path
) -> None:
    settings, services, org = _priced(tmp_path, tiny_model, "acme-first-interval")
    admin_key = services.keys.issue(DEFAULT_ORG, "platform admin", platform_admin=True).secret
    # A deployment of the model before the first start, so the catalog gets no shared one (nothing runs).
    services.deployments.create("tiny", deployment_id="idle", owner_org=org, replicas=0, min_replicas=0)
    app = create_app(settings, services)
    money = services.billing.money
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://yun", headers=headers) as admin:
            r = await admin.post("/admin/deployments", json={"model": "tiny", "id": "ded", "owner": org, **SHAPE})
            assert r.status_code == 402, r.text
            error = r.json()["error"]
            assert (error["code"], error["type"], error["param"]) == (
                "insufficient_quota",
                "insufficient_quota",
                "owner",
            )
            assert "first 60s of 1 dedicated replica(s)" in error["message"] and "0.06" in error["message"]
            assert (await admin.get("/admin/deployments/ded")).status_code == 404  # nothing recorded
            assert services.registry.of_deployment("ded", include_stopped=True) == []  # nothing placed
            assert money.balance(org) == (50 * PER_SECOND, 0) and money.compute_holds() == {}

            # Created at zero replicas (nothing to hold), then scaled up: the same refusal, nothing moves.
            r = await admin.post(
                "/admin/deployments", json={"model": "tiny", "id": "ded", "owner": org, "replicas": 0, **SHAPE}
            )
            assert r.status_code == 201, r.text
            r = await admin.post("/admin/deployments/ded/scale", json={"replicas": 1})
            assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_quota", r.text
            d = services.deployments.get("ded")
            assert d is not None and d.desired_replicas == 0
            assert money.balance(org) == (50 * PER_SECOND, 0) and money.compute_holds() == {}

            # With credit, the scale takes the first interval's hold, before the controller places it.
            services.billing.credit(org, "1")
            r = await admin.post("/admin/deployments/ded/scale", json={"replicas": 1})
            assert r.status_code == 200 and r.json()["desired"] == 1, r.text
            assert money.balance(org) == (1050 * PER_SECOND, 60 * PER_SECOND)
            assert [h.amount for h in money.compute_holds()["ded"]] == [60 * PER_SECOND]
            r = await admin.post("/admin/deployments/ded/scale", json={"replicas": 0})
            assert r.status_code == 200, r.text

            # A create refused for another reason (the id is taken) releases the hold it took.
            r = await admin.post("/admin/deployments", json={"model": "tiny", "id": "ded", "owner": org, **SHAPE})
            assert r.status_code == 400 and "already exists" in r.json()["error"]["message"], r.text
            assert [h.amount for h in money.compute_holds()["ded"]] == [60 * PER_SECOND]  # the scale's, still


async def test_the_autoscaler_holds_the_replicas_it_adds_and_is_refused_what_the_owner_cannot_cover(
    tmp_path: Path, tiny_model: Path
) -> None:
    # The controller's autoscaler moves `desired` through DeploymentRecords.scale: up, the added replicas'
    # first interval is held as the admin API's scale holds it (no dedicated replica runs unheld), and an
    # owner who cannot cover it is refused with nothing moved; a move that loses its race holds nothing.
    _, services, org = _priced(tmp_path, tiny_model, "acme-autoscale-hold")
    services.deployments.create(
        "tiny", deployment_id="auto", owner_org=org, replicas=0, min_replicas=0, max_replicas=3, **SHAPE
    )
    records = DeploymentRecords(services)
    money = services.billing.money

    with pytest.raises(PaymentRequired, match="first 60s of 1 dedicated replica"):
        records.scale("auto", 1, was=0)
    d = services.deployments.get("auto")
    assert d is not None and d.desired_replicas == 0
    assert money.balance(org) == (50 * PER_SECOND, 0) and money.compute_holds() == {}

    services.billing.credit(org, "1")
    assert records.scale("auto", 2, was=0)
    assert money.balance(org) == (1050 * PER_SECOND, 120 * PER_SECOND)
    assert [h.amount for h in money.compute_holds()["auto"]] == [120 * PER_SECOND]

    assert not records.scale("auto", 3, was=1)  # someone moved it meanwhile (it is at 2): theirs stands
    assert [h.amount for h in money.compute_holds()["auto"]] == [120 * PER_SECOND]  # nothing more held
    assert records.scale("auto", 1, was=2)  # down: nothing to hold
    assert money.balance(org) == (1050 * PER_SECOND, 120 * PER_SECOND)
