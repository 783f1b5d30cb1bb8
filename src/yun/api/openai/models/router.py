"""GET /v1/models and /v1/models/{id}, with Yun's model cards.

A key sees only the models it may use (its `allowed_models`, when set): others are absent from the list
and not found by id, exactly like models that do not exist. Tenants never see where a model is served
from; a platform admin also gets an external model's `upstream` address, without its credentials.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from yun.api.bounds import Identifier
from yun.api.control import refresh_routes
from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.openapi import error_responses
from yun.api.services import Services
from yun.catalog import served_card
from yun.catalog.registry import EXTERNAL_SOURCE
from yun.engines import redact_url
from yun.errors import ModelNotFound, PermissionDenied
from yun.store import ModelRecord
from yun.tenancy import Principal
from yun.tenancy.orgs import MANAGE_ROLES, require_role

router = APIRouter(tags=["models"], responses=error_responses(400, 401, 403, 404))

_PRIVATE_CARD_FIELDS = {"file_size"}


def _status(services: Services, model_id: str, org_id: str) -> str:
    try:
        deployment = services.router.get(model_id, org_id)
    except ModelNotFound:
        return "not deployed"
    if any(r.healthy for r in deployment.replicas):
        return "ready"
    return deployment.replicas[0].state if deployment.replicas else "no replicas"


def may_use(principal: Principal, m: ModelRecord) -> bool:
    """The key may use it, and it is everyone's or its organization's own (a fine-tuned model)."""
    mine = m.owner_org is None or m.owner_org == principal.org_id
    return mine and (principal.allowed_models is None or m.id in principal.allowed_models)


async def _visible(services: Services, principal: Principal, model_id: str) -> ModelRecord:
    try:
        m = await asyncio.to_thread(services.catalog.get, model_id)
    except ModelNotFound:
        m = None
    if m is None or not may_use(principal, m):
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return m


def public_model(services: Services, m: ModelRecord, principal: Principal) -> dict[str, Any]:
    served = served_card(m, services.settings.engine.context_per_slot)
    card = {k: v for k, v in served.items() if k not in _PRIVATE_CARD_FIELDS}
    if m.source == "external":
        # Cards written before addresses were kept out of them said "... server http://user:pass@host".
        card["source"] = EXTERNAL_SOURCE
    model: dict[str, Any] = {
        "id": m.id,
        "object": "model",
        "created": int(m.created_at.timestamp()) if m.created_at else 0,
        "owned_by": m.owner_org or "yun",
        "kind": m.kind,
        "status": _status(services, m.id, principal.org_id),
        "card": card,
    }
    if principal.is_platform_admin and m.source == "external":
        model["upstream"] = redact_url(m.url)
    return model


@router.get("/v1/models")
async def list_models(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    models = [m for m in await asyncio.to_thread(services.catalog.list) if may_use(principal, m)]
    return {"object": "list", "data": [public_model(services, m, principal) for m in models]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return public_model(services, await _visible(services, principal, model_id), principal)


@router.delete("/v1/models/{model_id:path}")
async def delete_model(model_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Deletes a fine-tuned model of the caller's organization (its base's replicas stop loading it)."""
    m = await _visible(services, principal, model_id)
    if m.base_model is None:
        raise PermissionDenied(f"The model '{model_id}' is not a fine-tuned model of your organization.")
    require_role(principal, MANAGE_ROLES, "delete fine-tuned models")
    await asyncio.to_thread(services.fine_tuning.remove_model, m)
    await refresh_routes(services)  # this gateway stops serving it now; the others within a poll (~1 s)
    return {"id": model_id, "object": "model", "deleted": True}
