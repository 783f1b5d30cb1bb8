"""Answers the tenant API (`/v1/organization/...`) and the admin API (`/admin/...`) both give: the same
operation on the caller's own org or on any org, so one implementation serves both."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse, Response

from yun.api.admin.protocol import KeyIn, KeyOut, key_out
from yun.api.services import Services

__all__ = ["issue_key", "statement_response"]


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
