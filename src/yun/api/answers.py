"""Answers the tenant API (`/v1/organization/...`) and the admin API (`/admin/...`) both give: the same
operation on the caller's own org or on any org, so one implementation serves both."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Query
from fastapi.responses import JSONResponse, Response

from yun.api.admin.protocol import KeyIn, KeyOut, key_out
from yun.api.bounds import DAY_MIN, Day
from yun.api.services import Services
from yun.errors import InvalidRequest

__all__ = ["EndDay", "StartDay", "day_range", "issue_key", "statement_response", "usage_answer"]

_DEFAULT_DAYS = 30
_MAX_SPAN_DAYS = 3660

StartDay = Annotated[Day | None, Query(description="First UTC day, included (default: 29 days before end)")]
EndDay = Annotated[Day | None, Query(description="Last UTC day, included (default: today)")]


def day_range(start: date | None, end: date | None) -> tuple[date, date]:
    """The inclusive UTC day range a query names: by default the last 30 days, today included; at most
    ten years (a report, not a scan of all history)."""
    end = end or datetime.now(UTC).date()
    start = start or max(DAY_MIN, end - timedelta(days=_DEFAULT_DAYS - 1))
    if start > end:
        raise InvalidRequest("start must not be after end", param="start")
    if (end - start).days > _MAX_SPAN_DAYS:
        raise InvalidRequest("a usage query spans at most ten years", param="start")
    return start, end


async def usage_answer(
    services: Services, org_id: str, start: date | None, end: date | None, group_by: Literal["model", "day"]
) -> dict[str, Any]:
    """Usage totals of `org_id` per model or per day over an inclusive UTC day range, from the rollups."""
    first, last = day_range(start, end)
    rows = await asyncio.to_thread(services.usage.summary, org_id, first, last, group_by)
    return {
        "object": "list",
        "org_id": org_id,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "group_by": group_by,
        "data": [r.to_dict() for r in rows],
    }


async def issue_key(services: Services, org_id: str, body: KeyIn, *, platform_admin: bool = False) -> KeyOut:
    """Mint a key for `org_id`; the answer carries its secret, which is never shown again."""
    issued = await asyncio.to_thread(
        services.keys.issue,
        org_id,
        body.name,
        platform_admin=platform_admin,
        role=body.role,
        allowed_models=body.allowed_models,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
        expires_at=body.expires_at,
    )
    return key_out(issued.record, issued.secret)


async def statement_response(services: Services, org_id: str, month: str, csv: bool, filename: str) -> Response:
    """The monthly statement of `org_id` for `month` (YYYY-MM, already validated), as JSON or a CSV file."""
    year, mon = (int(x) for x in month.split("-"))
    st = await asyncio.to_thread(services.statements, org_id, year, mon)
    if csv:
        return Response(
            st.to_csv(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )
    return JSONResponse(st.to_json())
