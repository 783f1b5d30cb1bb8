"""Admin API: people who sign in to the console (`yun users create|passwd`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path

from yun.api.admin.protocol import PasswordIn, UserIn
from yun.api.bounds import Email
from yun.api.deps import AdminDep, ServicesDep

__all__ = ["router"]

router = APIRouter()


@router.post("/users", status_code=201)
async def create_user(body: UserIn, _: AdminDep, services: ServicesDep) -> dict[str, str]:
    """A person with a password, in one organization with a role. Someone who already has a password
    is refused (add them to more organizations with the members endpoints; reset with `/password`)."""
    org = await asyncio.to_thread(services.org_service.resolve, body.org)
    await asyncio.to_thread(services.accounts.create_user, org.id, body.email, body.role, body.password)
    return {"email": body.email.lower(), "org_id": org.id, "role": body.role}


@router.put("/users/{email}/password")
async def set_password(
    email: Annotated[Email, Path(description="The person's email")],
    body: PasswordIn,
    _: AdminDep,
    services: ServicesDep,
) -> dict[str, str]:
    """Set a person's password: any lockout is lifted and every session of theirs ends."""
    await asyncio.to_thread(services.accounts.set_password, email, body.password)
    return {"email": email.lower(), "password": "set"}
