"""Admin API: organizations, their keys and their members. Any org is named by id or by name."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from yun.api.admin.deps import OrgDep
from yun.api.admin.protocol import (
    AdminKeyIn,
    InvitationIn,
    KeyOut,
    LimitsIn,
    MemberIn,
    MemberRoleIn,
    OrgIn,
    OrgOut,
    WeightIn,
    key_out,
    member_out,
)
from yun.api.answers import issue_key
from yun.api.bounds import Identifier
from yun.api.deps import AdminDep, ServicesDep
from yun.api.invites import invite, list_invitations
from yun.store import OrganizationRecord

__all__ = ["router"]

router = APIRouter()


def _org_out(org: OrganizationRecord) -> OrgOut:
    return OrgOut(
        id=org.id,
        name=org.name,
        created_at=org.created_at,
        rpm_limit=org.rpm_limit,
        tpm_limit=org.tpm_limit,
        weight=org.weight,
    )


@router.post("/orgs", status_code=201)
async def create_org(body: OrgIn, _: AdminDep, services: ServicesDep) -> OrgOut:
    org = await asyncio.to_thread(services.org_service.create, body.name, body.rpm_limit, body.tpm_limit)
    return _org_out(org)


@router.get("/orgs")
async def list_orgs(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    def listing() -> list[dict[str, Any]]:
        return [
            {**_org_out(o).model_dump(mode="json"), "balance": services.billing.balance(o.id)}
            for o in services.orgs.list()
        ]

    return {"object": "list", "data": await asyncio.to_thread(listing)}


@router.get("/orgs/{org}")
async def get_org(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    return {
        **_org_out(org).model_dump(mode="json"),
        "balance": await asyncio.to_thread(services.billing.balance, org.id),
    }


@router.put("/orgs/{org}/limits")
async def set_org_limits(org: OrgDep, body: LimitsIn, services: ServicesDep) -> OrgOut:
    updated = await asyncio.to_thread(services.orgs.set_limits, org.id, body.rpm_limit, body.tpm_limit)
    services.keys.forget_cache()
    return _org_out(updated)


@router.put("/orgs/{org}/weight")
async def set_org_weight(org: OrgDep, body: WeightIn, services: ServicesDep) -> OrgOut:
    """Its share of a busy model's slots: while organizations wait for the same replicas, each is served
    tokens in proportion to its weight (this gateway at once; every other within a few seconds)."""
    updated = await asyncio.to_thread(services.orgs.set_weight, org.id, body.weight)
    services.router.set_weights(await asyncio.to_thread(services.orgs.weights))
    return _org_out(updated)


# -- keys ------------------------------------------------------------------------------------
@router.post("/orgs/{org}/keys", status_code=201)
async def create_org_key(org: OrgDep, body: AdminKeyIn, services: ServicesDep) -> KeyOut:
    return await issue_key(services, org.id, body, platform_admin=body.platform_admin)


@router.get("/orgs/{org}/keys")
async def list_org_keys(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    keys = await asyncio.to_thread(services.keys.repo.list, org.id)
    return {"object": "list", "data": [key_out(k) for k in keys]}


@router.get("/keys")
async def list_keys(
    _: AdminDep,
    services: ServicesDep,
    org: Annotated[str | None, Query(min_length=1, max_length=200, description="Organization id or name")] = None,
) -> dict[str, Any]:
    org_id = None if org is None else (await asyncio.to_thread(services.org_service.resolve, org)).id
    keys = await asyncio.to_thread(services.keys.repo.list, org_id)
    return {"object": "list", "data": [key_out(k) for k in keys]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: Identifier, _: AdminDep, services: ServicesDep) -> KeyOut:
    return key_out(await asyncio.to_thread(services.keys.revoke, key_id))


# -- members ---------------------------------------------------------------------------------
@router.get("/orgs/{org}/members")
async def list_members(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    members = await asyncio.to_thread(services.org_service.members.list, org.id)
    return {
        "object": "list",
        "data": [member_out(m) for m in members],
    }


@router.post("/orgs/{org}/members", status_code=201)
async def add_member(org: OrgDep, body: MemberIn, services: ServicesDep) -> dict[str, Any]:
    m = await asyncio.to_thread(services.org_service.add_member, org.id, body.email, body.name, body.role)
    return member_out(m)


@router.delete("/orgs/{org}/members/{member_id}")
async def remove_member(org: OrgDep, member_id: Identifier, services: ServicesDep) -> dict[str, str]:
    await asyncio.to_thread(services.org_service.members.remove, org.id, member_id)
    return {"removed": member_id}


@router.patch("/orgs/{org}/members/{member_id}")
async def set_member_role(
    org: OrgDep, member_id: Identifier, body: MemberRoleIn, services: ServicesDep
) -> dict[str, Any]:
    """A member's role in the org; their console sessions act with it from their next request."""
    members = services.org_service.members
    await asyncio.to_thread(members.set_role, org.id, member_id, body.role)
    found = [m for m in await asyncio.to_thread(members.list, org.id) if m.id == member_id]
    return member_out(found[0])


# -- invitations -----------------------------------------------------------------------------
@router.post("/orgs/{org}/invitations", status_code=201)
async def create_invitation(
    org: OrgDep, body: InvitationIn, principal: AdminDep, services: ServicesDep, request: Request
) -> dict[str, Any]:
    """A single-use, expiring link (`url`, shown once) that makes `email` a member with `role` and lets
    them set a password at `/console/invite/<token>`."""
    return await invite(request, services, principal, org.id, body.email, body.role)


@router.get("/orgs/{org}/invitations")
async def org_invitations(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    return await list_invitations(services, org.id)


@router.get("/users")
async def list_users(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Every person with a membership, and the organizations they belong to (with their role in each)."""

    def people() -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for org in services.orgs.list():
            for m in services.org_service.members.list(org.id):
                person = found.setdefault(m.email, {"email": m.email, "memberships": []})
                person["memberships"].append(
                    {"org_id": org.id, "org_name": org.name, "member_id": m.id, "name": m.name, "role": m.role}
                )
        return sorted(found.values(), key=lambda p: str(p["email"]))

    return {"object": "list", "data": await asyncio.to_thread(people)}
