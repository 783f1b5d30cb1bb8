"""Admin API: compute prices per resource shape (the operator's cost and the dedicated price, versioned),
and unit economics (revenue against compute cost, per day and model or organization)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from yun.api.admin.protocol import ComputePriceIn
from yun.api.answers import EndDay, StartDay, day_range
from yun.api.bounds import Shape
from yun.api.deps import AdminDep, ServicesDep
from yun.billing.economics import unit_economics
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


@router.get("/economics")
async def economics(
    _: AdminDep,
    services: ServicesDep,
    days: Annotated[int, Query(ge=1, le=3660, description="The last N UTC days, today included")] = 30,
    by: Literal["model", "org"] = "model",
    start: StartDay = None,
    end: EndDay = None,
) -> dict[str, Any]:
    """Per UTC day and model (or organization): revenue (inference tokens, trained tokens and dedicated
    compute, as charged) against the operator's compute cost (every replica-second and every second of a
    fine-tuning run at its shape's cost price; training under its base model). By organization, shared
    compute and training compute are the operator's own row (`org_id` null): tenants pay for them by tokens.
    `start`/`end` (inclusive UTC days) choose a date range instead of the last `days`."""
    if start is None and end is None:
        last = datetime.now(UTC).date()
        first = last - timedelta(days=days - 1)
    else:  # a date range (inclusive UTC days, as usage takes) instead of the last `days`
        first, last = day_range(start, end)
    billing = services.billing
    rows = await asyncio.to_thread(
        unit_economics, billing.money, billing.compute, first, last, by, internal_orgs=billing.internal_orgs
    )
    money = ("token_revenue", "training_revenue", "compute_revenue", "revenue", "cost", "training_cost", "margin")
    seconds = ("replica_seconds", "training_seconds")
    totals = {k: sum(getattr(r, k) for r in rows) for k in (*money, *seconds)}
    return {
        "object": "list",
        "by": by,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "data": [r.to_dict(by) for r in rows],
        "totals": totals | {f"{k}_usd": format_usd(totals[k]) for k in money},
    }


def _out(p: ComputePriceRecord) -> dict[str, Any]:
    return {
        "shape": p.shape,
        "version": p.version,
        "cost": format_usd(p.cost_per_hour),
        "price": format_usd(p.price_per_hour),
        "unit": _UNIT,
        "created_at": p.created_at.isoformat(),
    }
