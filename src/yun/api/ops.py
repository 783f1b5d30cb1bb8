"""GET /health and GET /metrics (Prometheus text format). Unauthenticated, like most scrapers expect;
they reveal model names and replica health, never keys, tenants or prompts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from yun.api.deps import ServicesDep

router = APIRouter()


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    models: dict[str, Any] = {}
    for d in services.router.pools():
        models[d.deployment_id] = {
            "model": d.spec.model_id,
            "healthy_replicas": sum(r.healthy for r in d.replicas),
            "queued": len(d.queue),  # a total only: this endpoint is public, per-tenant counts are not
            "replicas": [
                {
                    "name": r.name,
                    "state": r.state,
                    "healthy": r.healthy,
                    "restarts": r.restarts,
                    "outstanding": r.outstanding,
                }
                for r in d.replicas
            ],
        }
    ready = all(v["healthy_replicas"] > 0 for v in models.values())
    return JSONResponse({"status": "ok" if ready else "degraded", "models": models})


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    m = services.metrics
    for gauge in (m.replica_healthy, m.replica_outstanding, m.replica_restarts):
        gauge.clear()  # replicas come and go (ids are per placement): only the current ones are reported
    for d in services.router.pools():
        m.queued.labels(d.spec.model_id).set(len(d.queue))
        for r in d.replicas:
            m.replica_healthy.labels(d.spec.model_id, r.name).set(1 if r.healthy else 0)
            m.replica_outstanding.labels(d.spec.model_id, r.name).set(r.outstanding)
            m.replica_restarts.labels(d.spec.model_id, r.name).set(r.restarts)
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
