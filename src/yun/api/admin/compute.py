"""Admin API: compute prices per resource shape (the operator's cost and the dedicated price, versioned)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from yun.api.admin.protocol import ComputePriceIn
from yun.api.bounds import Shape
from yun.api.deps import AdminDep, ServicesDep
from yun.errors import NotFound
from yun.metering import format_usd
from yun.store.compute import ComputePriceRecord

__all__ = ["router"]

router = APIRouter()

_UNIT = "USD per replica-hour"


@router.get("/compute-prices")
async def current_compute_prices(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """The current (newest) compute price version of every priced shape."""
    prices = await asyncio.to_thread(services.billing.compute.prices)
    return {"object": "list", "data": [_out(p) for _, p in sorted(prices.items())]}


@router.put("/compute-prices/{shape}")
async def set_compute_price(shape: Shape, body: ComputePriceIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Add a version of a shape's compute prices; compute metered before keeps the version it was priced at."""
    price = await asyncio.to_thread(
        services.billing.set_compute_price,
        shape,
        None if body.cost is None else str(body.cost),
        None if body.price is None else str(body.price),
    )
    return _out(price)


@router.get("/compute-prices/{shape}")
async def compute_price_history(shape: Shape, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Every compute price version of a shape, oldest first."""
    history = await asyncio.to_thread(services.billing.compute.price_history, shape)
    if not history:
        raise NotFound(f"no compute price for the shape {shape!r}")
    return {"object": "list", "data": [_out(p) for p in history]}


def _out(p: ComputePriceRecord) -> dict[str, Any]:
    return {
        "shape": p.shape,
        "version": p.version,
        "cost": format_usd(p.cost_per_hour),
        "price": format_usd(p.price_per_hour),
        "unit": _UNIT,
        "created_at": p.created_at.isoformat(),
    }
