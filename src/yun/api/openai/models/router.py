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
from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.openapi import error_responses
from yun.api.services import Services
from yun.catalog import served_card
from yun.catalog.registry import EXTERNAL_SOURCE
from yun.engines import redact_url
from yun.errors import ModelNotFound
from yun.store import ModelRecord
from yun.tenancy import Principal

router = APIRouter(tags=["models"], responses=error_responses(400, 401, 404))

_PRIVATE_CARD_FIELDS = {"file_size"}


def _status(services: Services, model_id: str, org_id: str) -> str:
    try:
        deployment = services.router.get(model_id, org_id)
    except ModelNotFound:
        return "not deployed"
    if any(r.healthy for r in deployment.replicas):
        return "ready"
    return deployment.replicas[0].state if deployment.replicas else "no replicas"


def _may_use(principal: Principal, model_id: str) -> bool:
    return principal.allowed_models is None or model_id in principal.allowed_models


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
        "owned_by": "yun",
        "kind": m.kind,
        "status": _status(services, m.id, principal.org_id),
        "card": card,
    }
    if principal.is_platform_admin and m.source == "external":
        model["upstream"] = redact_url(m.url)
    return model


@router.get("/v1/models")
async def list_models(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    models = [m for m in await asyncio.to_thread(services.catalog.list) if _may_use(principal, m.id)]
    return {"object": "list", "data": [public_model(services, m, principal) for m in models]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    if not _may_use(principal, model_id):
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return public_model(services, await asyncio.to_thread(services.catalog.get, model_id), principal)
