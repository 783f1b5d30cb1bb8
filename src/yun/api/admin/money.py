"""Admin API: credits, balances, prices, the free tier, usage, statements and the ledger of any org.

Date ranges are inclusive UTC days: `start=D&end=D` is the whole of day D, today included.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import Response

from yun.api.admin.deps import OrgDep
from yun.api.admin.protocol import CreditIn, FreeAllowanceIn, PriceIn
from yun.api.answers import EndDay, StartDay, day_range, statement_response, usage_answer
from yun.api.bounds import Identifier, Month
from yun.api.deps import AdminDep, ServicesDep
from yun.metering import format_usd

__all__ = ["router"]

router = APIRouter()


# -- credits and balance -----------------------------------------------------------------------
@router.post("/orgs/{org}/credits", status_code=201)
async def credit(org: OrgDep, body: CreditIn, services: ServicesDep) -> dict[str, Any]:
    posted = await asyncio.to_thread(
        services.billing.credit, org.id, str(body.amount), body.kind, body.reference, body.note
    )
    return {"posted": posted, "org_id": org.id, "balance": await asyncio.to_thread(services.billing.balance, org.id)}


@router.get("/orgs/{org}/balance")
async def balance(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    return {"org_id": org.id, **await asyncio.to_thread(services.billing.balance, org.id)}


# -- usage, statements, ledger -------------------------------------------------------------------
@router.get("/orgs/{org}/usage")
async def usage(
    org: OrgDep,
    services: ServicesDep,
    start: StartDay = None,
    end: EndDay = None,
    group_by: Literal["model", "day"] = "model",
) -> dict[str, Any]:
    return await usage_answer(services, org.id, start, end, group_by)


@router.get("/orgs/{org}/statements/{month}")
async def statement(
    org: OrgDep,
    services: ServicesDep,
    month: Annotated[Month, Path(description="YYYY-MM")],
    format: Literal["json", "csv"] = "json",
) -> Response:
    filename = f"statement-{org.id}-{month}.csv"
    return await statement_response(services, org.id, month, format == "csv", filename)


@router.get("/orgs/{org}/ledger")
async def ledger(org: OrgDep, services: ServicesDep, start: StartDay = None, end: EndDay = None) -> dict[str, Any]:
    """Every ledger entry of the org in the day range, oldest first (credits, charges, adjustments)."""
    first, last = day_range(start, end)
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(last + timedelta(days=1), time(), UTC)
    rows = await asyncio.to_thread(services.billing.money.ledger, org.id, since, until)
    return {
        "object": "list",
        "org_id": org.id,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "data": [
            {
                "id": r["id"],
                "kind": r["kind"],
                "amount_nanodollars": int(r["amount"]),
                "amount_usd": format_usd(int(r["amount"])),
                "reference": r["reference"],
                "note": r["note"],
                "created_at": _utc(r["created_at"]).isoformat(),
            }
            for r in rows
        ],
    }


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- prices and the free tier ----------------------------------------------------------------------
@router.get("/prices")
async def current_prices(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """The current (newest) price version of every priced model."""
    prices = await asyncio.to_thread(services.billing.money.prices)
    return {"object": "list", "data": [_price_out(p) for _, p in sorted(prices.items())]}


@router.put("/prices/{model_id:path}")
async def set_price(model_id: Identifier, body: PriceIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    await asyncio.to_thread(services.catalog.get, model_id)
    price = await asyncio.to_thread(
        services.billing.set_price,
        model_id,
        str(body.input),
        str(body.output),
        None if body.cached_input is None else str(body.cached_input),
        None if body.training is None else str(body.training),
    )
    return _price_out(price)


@router.get("/prices/{model_id:path}")
async def price_history(model_id: Identifier, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Every price version of a model, oldest first (a removed model keeps its history)."""
    history = await asyncio.to_thread(services.billing.money.price_history, model_id)
    if not history:
        await asyncio.to_thread(services.catalog.get, model_id)  # unknown model: 404, not an empty list
    return {"object": "list", "data": [_price_out(p) for p in history]}


@router.put("/free-allowances")
async def set_free_allowance(body: FreeAllowanceIn, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    await asyncio.to_thread(services.catalog.get, body.model)
    org_id = body.org_id
    if org_id != "*":
        org_id = (await asyncio.to_thread(services.org_service.resolve, org_id)).id
    await asyncio.to_thread(services.billing.set_free_allowance, org_id, body.model, body.monthly_tokens)
    return {**body.model_dump(), "org_id": org_id}


@router.get("/free-allowances")
async def free_allowances(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    found = await asyncio.to_thread(services.billing.money.free_allowances)
    return {
        "object": "list",
        "data": [
            {"org_id": org_id, "model": model, "monthly_tokens": tokens}
            for (org_id, model), tokens in sorted(found.items())
        ],
    }


def _price_out(p: Any) -> dict[str, Any]:
    return {
        "model": p.model_id,
        "version": p.version,
        "input": format_usd(p.input_per_mtok),
        "output": format_usd(p.output_per_mtok),
        "cached_input": format_usd(p.cached_input_per_mtok),
        "training": None if p.training_per_mtok is None else format_usd(p.training_per_mtok),
        "unit": "USD per 1M tokens",
        "created_at": _utc(p.created_at).isoformat(),
    }
