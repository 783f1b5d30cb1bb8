"""Platform admin API: organizations, credits, prices, free tier. Needs a platform-admin key."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from yun.api.admin.protocol import CreditIn, FreeAllowanceIn, KeyIn, KeyOut, LimitsIn, OrgIn, OrgOut, PriceIn
from yun.api.bounds import Identifier
from yun.api.deps import AdminDep, ServicesDep
from yun.api.openapi import error_responses
from yun.api.organization.router import issue_key

router = APIRouter(prefix="/admin", tags=["admin"], responses=error_responses(400, 401, 403, 404, 413))


def _org_out(org: Any) -> OrgOut:
    return OrgOut(id=org.id, name=org.name, created_at=org.created_at, rpm_limit=org.rpm_limit, tpm_limit=org.tpm_limit)


@router.post("/orgs", status_code=201)
async def create_org(body: OrgIn, _: AdminDep, services: ServicesDep) -> OrgOut:
    org = await asyncio.to_thread(services.org_service.create, body.name, body.rpm_limit, body.tpm_limit)
    return _org_out(org)


@router.get("/orgs")
async def list_orgs(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": [_org_out(o) for o in await asyncio.to_thread(services.orgs.list)]}


@router.get("/orgs/{org_id}")
async def get_org(org_id: Identifier, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    org = await asyncio.to_thread(services.org_service.get, org_id)
    return {**_org_out(org).model_dump(mode="json"), "balance": services.billing.balance(org_id)}


@router.put("/orgs/{org_id}/limits")
async def set_org_limits(org_id: Identifier, body: LimitsIn, _: AdminDep, services: ServicesDep) -> OrgOut:
    org = await asyncio.to_thread(services.orgs.set_limits, org_id, body.rpm_limit, body.tpm_limit)
    services.keys.forget_cache()
    return _org_out(org)


@router.post("/orgs/{org_id}/keys", status_code=201)
async def create_org_key(org_id: Identifier, body: KeyIn, _: AdminDep, services: ServicesDep) -> KeyOut:
    await asyncio.to_thread(services.org_service.get, org_id)
    return await issue_key(services, org_id, body)


@router.post("/orgs/{org_id}/credits", status_code=201)
async def credit(org_id: Identifier, body: CreditIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    await asyncio.to_thread(services.org_service.get, org_id)
    posted = await asyncio.to_thread(
        services.billing.credit, org_id, str(body.amount), body.kind, body.reference, body.note
    )
    return {"posted": posted, "balance": services.billing.balance(org_id)}


@router.put("/prices/{model_id:path}")
async def set_price(model_id: Identifier, body: PriceIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    await asyncio.to_thread(services.catalog.get, model_id)
    price = await asyncio.to_thread(
        services.billing.set_price,
        model_id,
        str(body.input),
        str(body.output),
        None if body.cached_input is None else str(body.cached_input),
    )
    return _price_out(price)


@router.get("/prices/{model_id:path}")
async def price_history(model_id: Identifier, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    history = await asyncio.to_thread(services.billing.money.price_history, model_id)
    return {"object": "list", "data": [_price_out(p) for p in history]}


@router.put("/free-allowances")
async def set_free_allowance(body: FreeAllowanceIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    await asyncio.to_thread(services.catalog.get, body.model)
    if body.org_id != "*":
        await asyncio.to_thread(services.org_service.get, body.org_id)
    await asyncio.to_thread(services.billing.set_free_allowance, body.org_id, body.model, body.monthly_tokens)
    return body.model_dump()


def _price_out(p: Any) -> dict[str, Any]:
    nano = 1_000_000_000
    return {
        "model": p.model_id,
        "version": p.version,
        "input": p.input_per_mtok / nano,
        "output": p.output_per_mtok / nano,
        "cached_input": p.cached_input_per_mtok / nano,
        "unit": "USD per 1M tokens",
        "created_at": p.created_at.isoformat(),
    }
