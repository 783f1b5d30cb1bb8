"""Dependencies of the admin API: the organization a path names, by id or by name."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Path

from yun.api.deps import AdminDep, ServicesDep
from yun.store import OrganizationRecord

__all__ = ["OrgDep"]


async def _org(
    _: AdminDep,  # first: a caller without an admin key learns nothing, not even whether the org exists
    services: ServicesDep,
    org: Annotated[str, Path(min_length=1, max_length=200, description="Organization id or name")],
) -> OrganizationRecord:
    return await asyncio.to_thread(services.org_service.resolve, org)


OrgDep = Annotated[OrganizationRecord, Depends(_org)]
