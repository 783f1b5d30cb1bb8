"""People of an organization in the console: the *People* page (an owner or admin lists the members, invites
someone, removes someone, through /v1/organization/members and /invitations), and the invitation link,
`/console/invite/<token>`: the invitee sets a password (or, if they already sign in, gives theirs), becomes
a member with the invitation's role, and is signed in. A used, expired or unknown link shows a page saying
so (never a JSON error: a person opened a link).

Anyone holding the link may use it, with no session: the token is the credential, single use, kept only
as its hash. The form is guarded against other sites posting it (Origin), like the sign-in form.
"""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from yun.api.console.router import (
    check_same_origin,
    read_form,
    render_page,
    signed_in,
    templates,
)
from yun.api.services import Services
from yun.errors import InvalidRequest, NotFound, RateLimited
from yun.store.invitations import InvitationRecord
from yun.tenancy import Principal
from yun.tenancy.orgs import MANAGE_ROLES

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_TOKEN_MAX = 200


def _invitations(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _page(request: Request, inv: InvitationRecord | None, error: str | None = None, status: int = 200) -> HTMLResponse:
    if inv is None:
        gone = "This invitation link is not valid."
    elif inv.used_at is not None:
        gone = "This invitation has already been used. Sign in instead, or ask for a new invitation."
    elif not inv.usable:
        gone = "This invitation has expired. Ask whoever invited you for a new one."
    else:
        gone = None
    context = {"title": "Invitation", "page": "invite", "me": None, "csrf_token": None, "inv": inv, "gone": gone}
    context["error"] = error
    response = templates.TemplateResponse(
        request, "invite.html", context, status_code=status if gone is None else max(status, 410 if inv else 404)
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL: keep it out of Referer
    return response


async def _find(request: Request, token: str) -> InvitationRecord | None:
    if len(token) > _TOKEN_MAX:
        return None
    try:
        return await asyncio.to_thread(_invitations(request).invitations.find, token)
    except NotFound:
        return None


@router.get("/invite/{token}")
async def invite_page(request: Request, token: str) -> Response:
    return _page(request, await _find(request, token))


@router.post("/invite/{token}")
async def accept_invite(request: Request, token: str) -> Response:
    check_same_origin(request)
    inv = await _find(request, token)
    if inv is None or not inv.usable:
        return _page(request, inv)
    form = await read_form(request)
    password = form.get("password", "")
    if not inv.has_password and password != form.get("password_again", password):
        return _page(request, inv, "The two passwords are not the same.", 400)
    ip = None if request.client is None else request.client.host
    try:
        issued = await asyncio.to_thread(_invitations(request).invitations.accept, token, password, ip)
    except InvalidRequest as exc:
        return _page(request, await _find(request, token), exc.message, 400)
    except RateLimited as exc:
        response = _page(request, inv, exc.message, 429)
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response
    return signed_in(request, issued)


@router.get("/people")
async def people(request: Request) -> Response:
    """The organization's people, for its owners and admins (and a platform admin, for its own org)."""

    def refusal(p: Principal) -> str | None:
        if p.is_platform_admin or p.role in MANAGE_ROLES:
            return None
        return "The People page is for an organization's owners and admins."

    return await render_page(request, "people.html", "People", "people", refusal)
