"""Dependencies of the admin API: the organization a path names, by id or by name; the deployments."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Path

from yun.api.bounds import Identifier
from yun.api.deps import AdminDep, ServicesDep
from yun.store import DeploymentRepository, OrganizationRecord

__all__ = ["DeploymentsDep", "OrgDep"]


async def _org(
    _: AdminDep,  # first: a caller without an admin key learns nothing, not even whether the org exists
    services: ServicesDep,
    org: Annotated[Identifier, Path(description="Organization id or name")],
) -> OrganizationRecord:
    return await asyncio.to_thread(services.org_service.resolve, org)


async def _deployments(services: ServicesDep) -> DeploymentRepository:
    return services.deployments


OrgDep = Annotated[OrganizationRecord, Depends(_org)]
DeploymentsDep = Annotated[DeploymentRepository, Depends(_deployments)]
