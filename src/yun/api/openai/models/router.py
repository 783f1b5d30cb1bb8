"""GET /v1/models and /v1/models/{id}, with Yun's model cards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.services import Services
from yun.catalog import served_card
from yun.store import ModelRecord

router = APIRouter()

_PRIVATE_CARD_FIELDS = {"file_size"}


def _status(services: Services, model_id: str) -> str:
    deployment = next((d for d in services.cluster.deployments() if d.spec.model_id == model_id), None)
    if deployment is None:
        return "not deployed"
    if any(r.healthy for r in deployment.replicas):
        return "ready"
    return deployment.replicas[0].state if deployment.replicas else "no replicas"


def public_model(services: Services, m: ModelRecord) -> dict[str, Any]:
    served = served_card(m, services.settings.engine.context_per_slot)
    card = {k: v for k, v in served.items() if k not in _PRIVATE_CARD_FIELDS}
    return {
        "id": m.id,
        "object": "model",
        "created": int(m.created_at.timestamp()) if m.created_at else 0,
        "owned_by": "yun",
        "kind": m.kind,
        "status": _status(services, m.id),
        "card": card,
    }


@router.get("/v1/models")
async def list_models(_: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": [public_model(services, m) for m in services.catalog.list()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, _: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    return public_model(services, services.catalog.get(model_id))
