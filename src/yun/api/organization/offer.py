"""What the calling key's organization is offered and runs: the current price of each model it may use,
and its dedicated deployments with the replica-seconds metered for them.

Read-only, so the console's Models and Playground pages (and scripts) can show a tenant what an answer
costs and what its compute ran for, without the admin API. Scoped by the caller's org id from the key.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.openai.models.router import may_use
from yun.api.openapi import error_responses
from yun.cluster.base import Resources
from yun.metering.usage import format_usd
from yun.store.money.records import PriceRecord
from yun.tenancy.orgs import USAGE_ROLES, require_role

__all__ = ["router"]

router = APIRouter(prefix="/v1/organization", tags=["organization"], responses=error_responses(400, 401, 403))


def _price_out(model_id: str, p: PriceRecord | None) -> dict[str, Any]:
    """A model without a price is free to use (the gateway charges nothing for it): said as `priced: false`."""
    if p is None:
        return {"model": model_id, "priced": False, "unit": "USD per 1M tokens"}
    return {
        "model": model_id,
        "priced": True,
        "version": p.version,
        "input": format_usd(p.input_per_mtok),
        "cached_input": format_usd(p.cached_input_per_mtok),
        "output": format_usd(p.output_per_mtok),
        "training": None if p.training_per_mtok is None else format_usd(p.training_per_mtok),
        "unit": "USD per 1M tokens",
    }


@router.get("/prices")
async def prices(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The current price of every model this key may use (a fine-tuned model has its own, or none)."""

    def read() -> list[dict[str, Any]]:
        current = services.billing.money.prices()
        models = [m for m in services.catalog.list() if may_use(principal, m)]
        return [_price_out(m.id, current.get(m.id)) for m in sorted(models, key=lambda m: m.id)]

    return {"object": "list", "data": await asyncio.to_thread(read)}


@router.get("/deployments")
async def deployments(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The deployments dedicated to this organization: what runs, how many replicas are ready, the
    replica-seconds metered for it so far and what they were charged, and the current price of its shape."""
    require_role(principal, USAGE_ROLES, "read the organization's compute")

    def read() -> list[dict[str, Any]]:
        owned = services.deployments.list(owner_org=principal.org_id)
        ready = services.deployments.ready_counts([d.id for d in owned]) if owned else {}
        metered = services.billing.compute.owned_by_deployment(principal.org_id)
        shape_prices = services.billing.compute.prices()
        out = []
        for d in owned:
            shape = Resources(d.cpus, d.gpus, d.memory_mb).shape
            seconds, charged = metered.get(d.id, (0, 0))
            price = shape_prices.get(shape)
            out.append(
                {
                    "id": d.id,
                    "model": d.model_id,
                    "state": d.state,
                    "message": d.message,
                    "desired": d.desired_replicas,
                    "ready": ready.get(d.id, 0),
                    "shape": shape,
                    "replica_seconds": seconds,
                    "charged": format_usd(charged),
                    "price_per_replica_hour": None if price is None else format_usd(price.price_per_hour),
                    "created_at": d.created_at,
                }
            )
        return out

    return {"object": "list", "data": await asyncio.to_thread(read)}
