"""Console sessions on the HTTP API: the cookie, its flags, and the CSRF rule.

A browser signed in to the console calls Yun's own API (/v1/..., /v1/organization/..., /admin/...) with
its session cookie instead of a key. The cookie is HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), Path=/, and Secure when the request came over https (or always, with
`console.secure_cookie` or `environment=production`). On plain http (a laptop's http://127.0.0.1:8000) it
is not Secure, or the browser would never send it back: run Yun behind TLS for anything but local use.
Every state-changing request made with the cookie (any method but GET, HEAD, OPTIONS) must also carry the
session's CSRF token in `X-CSRF-Token`, else 403: SameSite is the first wall, the token the second.
Requests with an API key are untouched (a browser never sends a key on its own, so it needs no token).
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.responses import Response

from yun.api.services import Services
from yun.errors import AuthenticationFailed, PermissionDenied
from yun.tenancy.accounts import IssuedSession, SessionPrincipal

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "clear_session_cookie",
    "cookie_principal",
    "session_of",
    "set_session_cookie",
]

SESSION_COOKIE = "yun_session"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def session_of(request: Request) -> SessionPrincipal | None:
    """The live console session of this request's cookie, or None. Kept on the request, so the pages and
    `authenticate` look it up once."""
    if "yun_session_resolved" in request.scope:
        found: SessionPrincipal | None = request.scope["yun_session_resolved"]
        return found
    token = request.cookies.get(SESSION_COOKIE)
    found = None
    if token:
        services: Services = request.app.state.services
        found = await asyncio.to_thread(services.accounts.resolve, token)
    request.scope["yun_session_resolved"] = found
    return found


async def cookie_principal(request: Request) -> SessionPrincipal:
    """The session behind a request that carries no API key but a cookie header: 401 without a live
    session, 403 for a state change without its CSRF token."""
    session = await session_of(request)
    if session is None:
        if request.cookies.get(SESSION_COOKIE):
            raise AuthenticationFailed("Your console session has ended (signed out or expired): sign in again.")
        raise AuthenticationFailed("You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.")
    if request.method not in _SAFE_METHODS and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
        raise PermissionDenied(
            "A request made with a console session must carry the session's CSRF token in X-CSRF-Token."
        )
    return session


def _secure(request: Request) -> bool:
    settings = request.app.state.services.settings
    chosen: bool | None = settings.console.secure_cookie
    if chosen is not None:
        return chosen
    return request.url.scheme == "https" or settings.environment == "production"


def set_session_cookie(response: Response, request: Request, issued: IssuedSession) -> None:
    services: Services = request.app.state.services
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=services.settings.console.session_ttl_s,
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict")
