"""Dependencies: services live on `app.state.services`, built once by the app factory."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from yun.api.services import Services
from yun.api.sessions import cookie_principal
from yun.errors import PermissionDenied
from yun.tenancy import Principal

__all__ = ["AdminDep", "PrincipalDep", "ServicesDep", "authenticate"]


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool,
# and two thread hops per request cost more than everything they do.
async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticate(request: Request) -> Principal:
    """The caller of this request, from its `Authorization: Bearer` key, or else its `x-api-key` header
    (how Anthropic's clients send a key), or else, with neither, its console session cookie (api/sessions.py),
    on every route alike."""
    headers = request.headers
    authorization = headers.get("authorization")
    # A request with a key pays one `is None` here: cookies are parsed only when no key was sent at all.
    if authorization is None and "cookie" in headers and "x-api-key" not in headers:
        return (await cookie_principal(request)).principal
    scheme, _, token = (authorization or "").partition(" ")
    secret = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key")
    services: Services = request.app.state.services
    return await services.keys.verified(secret)


async def _principal(request: Request) -> Principal:
    return await authenticate(request)


async def _admin(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not principal.is_platform_admin:
        raise PermissionDenied("This endpoint needs a platform admin key.")
    return principal


ServicesDep = Annotated[Services, Depends(_services)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
AdminDep = Annotated[Principal, Depends(_admin)]
