"""The console's routes: sign-in and sign-out (forms, so they work before any script runs), the pages, and
the two session-only calls a page needs beyond Yun's API (`/console/api/me`, `/console/api/password`).

A page without a live session redirects to the sign-in page; a `/console/api/...` call without one is
a 401 (they act on the signed-in person, so an API key does not open them).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from yun.api.admin.protocol import PasswordChangeIn
from yun.api.services import Services
from yun.api.sessions import clear_session_cookie, cookie_principal, session_of, set_session_cookie
from yun.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited
from yun.tenancy import Principal
from yun.tenancy.accounts import IssuedSession, SessionPrincipal

__all__ = ["STATIC_DIR", "forbidden_page", "router", "signed_in", "templates"]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"
templates = _templates = Jinja2Templates(directory=_HERE / "templates")
_PAGES = {
    "": ("overview.html", "Overview"),
    "usage": ("usage.html", "Usage"),
    "keys": ("keys.html", "Keys"),
    "account": ("account.html", "Account"),
    "models": ("models.html", "Models"),
    "playground": ("playground.html", "Playground"),
    "fine-tuning": ("fine_tuning.html", "Fine-tuning"),
}
_FORM_LIMIT = 8192

router = APIRouter(prefix="/console", include_in_schema=False)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def check_same_origin(request: Request) -> None:
    """A sign-in or sign-out form posted from another site's page is refused (login CSRF): browsers send
    `Origin` with every cross-site POST."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise PermissionDenied("This form may only be posted from Yun's own console.")


async def read_form(request: Request) -> dict[str, str]:
    if int(request.headers.get("content-length") or 0) > _FORM_LIMIT:
        raise InvalidRequest("the form is too large")
    form = await request.form(max_files=0, max_fields=8)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _sign_in_page(request: Request, error: str | None = None, status: int = 200, tab: str = "email") -> HTMLResponse:
    return _templates.TemplateResponse(
        request, "sign_in.html", {"title": "Sign in", "error": error, "tab": tab}, status_code=status
    )


def _too_many(request: Request, exc: RateLimited, tab: str) -> HTMLResponse:
    response = _sign_in_page(request, exc.message, 429, tab)
    response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return response


def _client_ip(request: Request) -> str | None:
    return None if request.client is None else request.client.host


def forbidden_page(
    request: Request, message: str, me: dict[str, Any] | None = None, csrf_token: str | None = None
) -> HTMLResponse:
    """A 403 as a page (a person followed a link or posted a form: JSON would be of no use to them)."""
    context = {"title": "Not allowed", "page": "forbidden", "me": me, "message": message, "csrf_token": csrf_token}
    response = _templates.TemplateResponse(request, "forbidden.html", context, status_code=403)
    response.headers["Cache-Control"] = "no-store"
    return response


def signed_in(request: Request, issued: IssuedSession) -> Response:
    response = RedirectResponse("/console", status_code=303)
    set_session_cookie(response, request, issued)
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    if await session_of(request) is not None:
        return RedirectResponse("/console", status_code=303)
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    check_same_origin(request)
    form = await read_form(request)
    email, password = form.get("email", ""), form.get("password", "")
    org = form.get("org", "").strip() or None
    try:
        issued = await asyncio.to_thread(_services(request).accounts.sign_in, email, password, org, _client_ip(request))
    except AuthenticationFailed as exc:
        return _sign_in_page(request, exc.message, 401)
    except RateLimited as exc:
        return _too_many(request, exc, "email")
    return signed_in(request, issued)


@router.post("/sign-in/key")
async def sign_in_with_key(request: Request) -> Response:
    check_same_origin(request)
    form = await read_form(request)
    try:
        issued = await asyncio.to_thread(
            _services(request).accounts.sign_in_with_key, form.get("api_key", ""), _client_ip(request)
        )
    except AuthenticationFailed as exc:
        return _sign_in_page(request, exc.message, 401, tab="key")
    except RateLimited as exc:
        return _too_many(request, exc, "key")
    return signed_in(request, issued)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    """Ends the session (its row is deleted, so the cookie opens nothing even if a copy of it survives).
    The CSRF token comes as the form's `csrf_token` field, or in X-CSRF-Token."""
    check_same_origin(request)
    session = await session_of(request)
    response = RedirectResponse("/console/sign-in", status_code=303)
    if session is not None:
        form = await read_form(request)
        if not session.csrf_ok(form.get("csrf_token") or request.headers.get("x-csrf-token")):
            return forbidden_page(
                request, "Signing out needs the session's CSRF token: use the Sign out button of a console page."
            )
        token = request.cookies.get("yun_session", "")
        await asyncio.to_thread(_services(request).accounts.sign_out, token)
    clear_session_cookie(response, request)
    return response


# -- session-only API -------------------------------------------------------------------------------
async def _session(request: Request) -> SessionPrincipal:
    if "cookie" not in request.headers:
        raise AuthenticationFailed("This call needs a console session: sign in at /console/sign-in.")
    return await cookie_principal(request)


SessionDep = Annotated[SessionPrincipal, Depends(_session)]


def person_view(session: SessionPrincipal) -> dict[str, Any]:
    p = session.principal
    return {
        "email": session.email,
        "org_id": p.org_id,
        "role": p.role,
        "is_platform_admin": p.is_platform_admin,
        "signed_in_with": "password" if session.user_id is not None else "api_key",
    }


@router.get("/api/me")
async def me(session: SessionDep) -> dict[str, Any]:
    return person_view(session)


@router.post("/api/password")
async def change_password(body: PasswordChangeIn, session: SessionDep, request: Request) -> dict[str, str]:
    """The signed-in person's own password; their other sessions end, this one stays."""
    accounts = _services(request).accounts
    await asyncio.to_thread(accounts.change_password, session, body.current_password, body.new_password)
    return {"password": "changed"}


# -- pages ------------------------------------------------------------------------------------------
async def render_page(
    request: Request, template: str, title: str, page: str, refusal: Callable[[Principal], str | None] | None = None
) -> Response:
    """A console page for the signed-in person: without a live session, the sign-in page; when `refusal`
    gives a reason for this person, the 403 page saying it."""
    session = await session_of(request)
    if session is None:
        response: Response = RedirectResponse("/console/sign-in", status_code=303)
        if request.cookies.get("yun_session"):
            clear_session_cookie(response, request)
        return response
    me = person_view(session)
    reason = None if refusal is None else refusal(session.principal)
    if reason is not None:
        return forbidden_page(request, reason, me, session.csrf_token)
    context = {"title": title, "page": page, "me": me, "csrf_token": session.csrf_token}
    response = _templates.TemplateResponse(request, template, context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _page(request: Request, name: str) -> Response:
    template, title = _PAGES[name]
    return await render_page(request, template, title, name or "overview")


@router.get("")
async def overview(request: Request) -> Response:
    return await _page(request, "")


@router.get("/usage")
async def usage(request: Request) -> Response:
    return await _page(request, "usage")


@router.get("/keys")
async def keys(request: Request) -> Response:
    return await _page(request, "keys")


@router.get("/account")
async def account(request: Request) -> Response:
    return await _page(request, "account")


@router.get("/models")
async def models(request: Request) -> Response:
    return await _page(request, "models")


@router.get("/playground")
async def playground(request: Request) -> Response:
    return await _page(request, "playground")


@router.get("/fine-tuning")
async def fine_tuning(request: Request) -> Response:
    return await _page(request, "fine-tuning")
