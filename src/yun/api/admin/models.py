"""Admin API: the model catalog. A running gateway deploys what is added here within seconds."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from yun.api.admin.protocol import ModelIn
from yun.api.bounds import Identifier
from yun.api.deps import AdminDep, ServicesDep
from yun.api.services import Services
from yun.catalog import served_card
from yun.errors import InvalidRequest
from yun.store import ModelRecord

__all__ = ["router"]

router = APIRouter()

_PASSWORD_IN_URL = re.compile(r"(://[^/:@\s]+:)[^/@\s]+@")


def _redact(text: str | None) -> str | None:
    """Operators see where a model comes from, never the password in an upstream URL."""
    return None if text is None else _PASSWORD_IN_URL.sub(r"\1***@", text)


def _status(services: Services, model_id: str) -> dict[str, Any]:
    deployment = next((d for d in services.router.pools() if d.spec.model_id == model_id), None)
    if deployment is None:
        return {"status": "not deployed", "healthy_replicas": 0, "replicas": 0}
    healthy = sum(r.healthy for r in deployment.replicas)
    state = "ready" if healthy else (deployment.replicas[0].state if deployment.replicas else "no replicas")
    return {"status": state, "healthy_replicas": healthy, "replicas": len(deployment.replicas)}


def _model_out(services: Services, m: ModelRecord) -> dict[str, Any]:
    served = served_card(m, services.settings.engine.context_per_slot)
    card = {k: _redact(v) if isinstance(v, str) else v for k, v in served.items()}
    return {
        "id": m.id,
        "object": "model",
        "kind": m.kind,
        "source": m.source,
        "path": m.path,
        "url": _redact(m.url),
        "upstream_model": m.upstream_model,
        "has_upstream_key": m.upstream_key is not None,
        "replicas": m.replicas,
        "created_at": m.created_at.isoformat() if m.created_at else None,
        **_status(services, m.id),
        "card": card,
    }


@router.get("/models")
async def list_models(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    models = await asyncio.to_thread(services.catalog.list)
    return {"object": "list", "data": [_model_out(services, m) for m in models]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: Identifier, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return _model_out(services, await asyncio.to_thread(services.catalog.get, model_id))


@router.post("/models", status_code=201)
async def add_model(body: ModelIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Register a model from a GGUF file on the server's machine, the Hugging Face hub, or an external
    OpenAI-compatible server."""
    if sum(x is not None for x in (body.file, body.hub, body.url)) != 1:
        raise InvalidRequest("give exactly one of file, hub (with hub_file) or url", param="file")
    catalog = services.catalog
    if body.file is not None:
        m = await asyncio.to_thread(
            catalog.add_local, body.id, Path(body.file), body.kind, license=body.license, context=body.context
        )
    elif body.hub is not None:
        if body.hub_file is None:
            raise InvalidRequest("hub needs hub_file (the GGUF file name inside the repo)", param="hub_file")
        m = await asyncio.to_thread(catalog.add_hub, body.id, body.hub, body.hub_file, body.kind, body.context)
    else:
        assert body.url is not None
        m = await asyncio.to_thread(
            catalog.add_external,
            body.id,
            body.url,
            upstream_model=body.upstream_model,
            api_key=body.api_key,
            kind=body.kind,
            context_length=body.context,
        )
    return _model_out(services, m)


@router.delete("/models/{model_id:path}")
async def remove_model(model_id: Identifier, _: AdminDep, services: ServicesDep) -> dict[str, str]:
    await asyncio.to_thread(services.catalog.remove, model_id)
    return {"removed": model_id}
