"""The calling key's own organization: keys, members, balance, usage, statements.

Every query is scoped by the caller's org id, taken from the key and never from the request, so one
tenant cannot name another's resources: a foreign id is simply not found (404).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from yun.api.admin.protocol import InvitationIn, KeyIn, KeyOut, MemberIn, key_out, member_out
from yun.api.answers import EndDay, StartDay, issue_key, statement_response, usage_answer
from yun.api.bounds import Cursor, Identifier, Month, PageLimit
from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.invites import invite, list_invitations
from yun.api.openapi import error_responses
from yun.errors import InvalidRequest, NotFound
from yun.tenancy.orgs import MANAGE_ROLES, USAGE_ROLES, require_role

router = APIRouter(prefix="/v1/organization", tags=["organization"], responses=error_responses(400, 401, 403, 404, 413))


@router.post("/keys", status_code=201)
async def create_key(body: KeyIn, principal: PrincipalDep, services: ServicesDep) -> KeyOut:
    require_role(principal, MANAGE_ROLES, "create keys")
    if body.role == "owner" and principal.role != "owner" and not principal.is_platform_admin:
        raise InvalidRequest("only an owner can create owner keys", param="role")
    return await issue_key(services, principal.org_id, body)


@router.get("/keys")
async def list_keys(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    require_role(principal, MANAGE_ROLES, "list keys")
    keys = await asyncio.to_thread(services.keys.repo.list, principal.org_id)
    return {"object": "list", "data": [key_out(k) for k in keys]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> KeyOut:
    require_role(principal, MANAGE_ROLES, "revoke keys")
    record = await asyncio.to_thread(services.keys.repo.get, key_id)
    if record is None or record.org_id != principal.org_id:
        raise NotFound(f"no API key {key_id!r}")
    return key_out(await asyncio.to_thread(services.keys.revoke, key_id))


@router.post("/members", status_code=201)
async def add_member(body: MemberIn, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    require_role(principal, MANAGE_ROLES, "add members")
    m = await asyncio.to_thread(services.org_service.add_member, principal.org_id, body.email, body.name, body.role)
    return member_out(m)


@router.get("/members")
async def list_members(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    require_role(principal, MANAGE_ROLES, "list members")
    members = await asyncio.to_thread(services.org_service.members.list, principal.org_id)
    return {
        "object": "list",
        "data": [member_out(m) for m in members],
    }


@router.delete("/members/{member_id}")
async def remove_member(member_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> dict[str, str]:
    require_role(principal, MANAGE_ROLES, "remove members")
    await asyncio.to_thread(services.org_service.members.remove, principal.org_id, member_id)
    return {"removed": member_id}


@router.post("/invitations", status_code=201)
async def create_invitation(
    body: InvitationIn, principal: PrincipalDep, services: ServicesDep, request: Request
) -> dict[str, Any]:
    """Invite someone to this organization: a single-use, expiring link (`url`, shown once)."""
    require_role(principal, MANAGE_ROLES, "invite people")
    return await invite(request, services, principal, principal.org_id, body.email, body.role)


@router.get("/invitations")
async def invitations(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    require_role(principal, MANAGE_ROLES, "list invitations")
    return await list_invitations(services, principal.org_id)


@router.get("/balance")
async def balance(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    require_role(principal, USAGE_ROLES, "read the balance")
    return {"org_id": principal.org_id, **await asyncio.to_thread(services.billing.balance, principal.org_id)}


@router.get("/free-tier")
async def free_tier(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """This month's free tokens per model: the allowance, what was used (and is held), what is left."""
    require_role(principal, USAGE_ROLES, "read the free tier")
    return {"object": "list", "data": await asyncio.to_thread(services.billing.free_tier, principal.org_id)}


@router.get("/usage")
async def usage(
    principal: PrincipalDep,
    services: ServicesDep,
    start: StartDay = None,
    end: EndDay = None,
    group_by: Literal["model", "day"] = "model",
) -> dict[str, Any]:
    """Totals for the UTC days start..end, both included: today's usage is there as soon as it settles."""
    require_role(principal, USAGE_ROLES, "read usage")
    return await usage_answer(services, principal.org_id, start, end, group_by)


@router.get("/usage/records")
async def usage_records(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: PageLimit = 100,
    after: Cursor | None = None,
) -> dict[str, Any]:
    """Newest first; pass `last_id` as `after` for the next page while `has_more` is true."""
    require_role(principal, USAGE_ROLES, "read usage")
    try:
        page, more = await asyncio.to_thread(services.usage.records, principal.org_id, limit, after)
    except NotFound as exc:  # a foreign or unknown record id is not a cursor (and reveals nothing)
        raise InvalidRequest(exc.message, param="after") from exc
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["request_id"] if page else None,
        "last_id": page[-1]["request_id"] if page else None,
        "has_more": more,
    }


@router.get("/statements/{month}")
async def statement(
    month: Month, principal: PrincipalDep, services: ServicesDep, format: Literal["json", "csv"] = "json"
) -> Response:
    require_role(principal, USAGE_ROLES, "read statements")
    return await statement_response(services, principal.org_id, month, format == "csv", f"statement-{month}.csv")
