"""Dependencies: services live on `app.state.services`, built once by the app factory."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

from yun.api.services import Services
from yun.errors import PermissionDenied
from yun.gateway import Gateway
from yun.tenancy import Principal
from yun.tenancy.orgs import INFERENCE_ROLES, require_role

__all__ = ["AdminDep", "CallerDep", "GatewayDep", "PrincipalDep", "ServicesDep", "read_body"]

M = TypeVar("M", bound=BaseModel)


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool,
# and two thread hops per request cost more than everything they do.
async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _gateway(request: Request) -> Gateway:
    services: Services = request.app.state.services
    return services.gateway


async def _principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    secret = token.strip() if scheme.lower() == "bearer" else None
    services: Services = request.app.state.services
    return services.keys.verify(secret)


async def _caller(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    """A key that may spend: owner, admin or member (a billing-viewer key can only read)."""
    require_role(principal, INFERENCE_ROLES, "call models")
    return principal


async def _admin(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not principal.is_platform_admin:
        raise PermissionDenied("This endpoint needs a platform admin key.")
    return principal


ServicesDep = Annotated[Services, Depends(_services)]
GatewayDep = Annotated[Gateway, Depends(_gateway)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
CallerDep = Annotated[Principal, Depends(_caller)]
AdminDep = Annotated[Principal, Depends(_admin)]


async def read_body(request: Request, model: type[M]) -> M:
    """Parse the JSON body strictly (wrong types are errors, not coercions); errors become 400s."""
    return model.model_validate_json(await request.body(), strict=True)
