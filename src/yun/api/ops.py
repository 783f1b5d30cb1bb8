"""GET /health and GET /metrics (Prometheus text format). Unauthenticated, like most scrapers expect;
they reveal model names and replica health, never keys, tenants or prompts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from yun.api.deps import ServicesDep
from yun.api.services import Services
from yun.cluster.load import Load

router = APIRouter()
log = logging.getLogger("yun.api")


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
    deployments = await asyncio.to_thread(_deployments, services)
    # A deployment at zero replicas (scaled to zero, idle) is as asked: not a degraded one.
    ready = all(
        v["healthy_replicas"] > 0 or deployments.get(name, {}).get("desired") == 0 for name, v in models.items()
    ) and all(d["ready"] >= d["desired"] for d in deployments.values())
    body = {"status": "ok" if ready else "degraded", "models": models, "deployments": deployments}
    return JSONResponse(body)


def _deployments(services: Services) -> dict[str, Any]:
    """Desired vs ready replicas of every deployment, from the registry (what the controller made), the
    requests queued and in flight for it over every gateway (as they published it for the autoscaler:
    null when it cannot be read), and in a line why it is not as asked. Dedicated deployments are shown
    without their owner."""
    records = services.deployments.list()
    ready = services.deployments.ready_counts()
    try:
        loads: dict[str, Load] | None = services.loads.totals([d.id for d in records])
    except Exception:  # noqa: BLE001 - health answers without the load rather than not at all
        log.exception("reading the gateways' load failed")
        loads = None
    return {
        d.id: {
            "model": d.model_id,
            "dedicated": d.owner_org is not None,
            "state": d.state,
            "desired": d.desired_replicas,
            "ready": ready.get(d.id, 0),
            "queued": None if loads is None else loads.get(d.id, Load()).queued,
            "in_flight": None if loads is None else loads.get(d.id, Load()).in_flight,
            "message": d.message.split("\n", 1)[0][:300],
        }
        for d in records
    }


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    m = services.metrics
    deployments = await asyncio.to_thread(_deployments, services)
    gauges = (m.replica_healthy, m.replica_outstanding, m.replica_restarts)
    for gauge in (*gauges, m.deployment_desired, m.deployment_ready, m.deployment_queued):
        gauge.clear()  # replicas and deployments come and go: only the current ones are reported
    for name, d in deployments.items():
        m.deployment_desired.labels(name, d["model"]).set(d["desired"])
        m.deployment_ready.labels(name, d["model"]).set(d["ready"])
        if d["queued"] is not None:
            m.deployment_queued.labels(name, d["model"]).set(d["queued"])
    for d in services.router.pools():
        m.queued.labels(d.spec.model_id).set(len(d.queue))
        for r in d.replicas:
            m.replica_healthy.labels(d.spec.model_id, r.name).set(1 if r.healthy else 0)
            m.replica_outstanding.labels(d.spec.model_id, r.name).set(r.outstanding)
            m.replica_restarts.labels(d.spec.model_id, r.name).set(r.restarts)
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
