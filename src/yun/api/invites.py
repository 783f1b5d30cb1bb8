"""Invitations on the HTTP API: what making one answers (its link, shown once) and what a listing shows
(never a token: only its hash is kept). Used by `/admin/orgs/{org}/invitations` and
`/v1/organization/invitations`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from yun.api.services import Services
from yun.store.invitations import InvitationRecord
from yun.tenancy import Principal

__all__ = ["invitation_out", "invite", "list_invitations"]


def invitation_out(inv: InvitationRecord) -> dict[str, Any]:
    state = "used" if inv.used_at is not None else ("pending" if inv.usable else "expired")
    return {
        "id": inv.id,
        "object": "organization.invitation",
        "org_id": inv.org_id,
        "email": inv.email,
        "role": inv.role,
        "state": state,
        "created_at": inv.created_at.isoformat(),
        "expires_at": inv.expires_at.isoformat(),
        "used_at": None if inv.used_at is None else inv.used_at.isoformat(),
    }


async def invite(
    request: Request, services: Services, by: Principal, org_id: str, email: str, role: str
) -> dict[str, Any]:
    issued = await asyncio.to_thread(services.invitations.invite, by, org_id, email, role)
    path = f"/console/invite/{issued.token}"
    return {**invitation_out(issued.invitation), "path": path, "url": str(request.base_url).rstrip("/") + path}


async def list_invitations(services: Services, org_id: str) -> dict[str, Any]:
    found = await asyncio.to_thread(services.invitations.list, org_id)
    return {"object": "list", "data": [invitation_out(i) for i in found]}
