"""The operator's pages: Organizations (people, credits and the ledger, keys, prices), Deployments (scale
and update) and Economics (revenue against compute cost). Each page's data comes from the admin API
(/admin/...) with the session cookie, as the CLI's does with a key.

Only a platform admin (a session opened with an admin key) sees them: anyone else signed in gets a 403
page and no link to them in the nav; without a session, the sign-in page. The page's frame is all that
is gated here: every call its script makes is checked again by the admin API itself.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from yun.api.console.router import render_page
from yun.tenancy import Principal

__all__ = ["OPERATOR_PAGES", "router"]

OPERATOR_PAGES = {
    "organizations": ("organizations.html", "Organizations"),
    "deployments": ("deployments.html", "Deployments"),
    "economics": ("economics.html", "Economics"),
}

router = APIRouter(include_in_schema=False)


async def _operator_page(request: Request, name: str) -> Response:
    template, title = OPERATOR_PAGES[name]

    def refusal(principal: Principal) -> str | None:
        return None if principal.is_platform_admin else f"The {title} page is for platform admins only."

    return await render_page(request, template, title, name, refusal)


@router.get("/organizations")
async def organizations(request: Request) -> Response:
    return await _operator_page(request, "organizations")


@router.get("/deployments")
async def deployments(request: Request) -> Response:
    return await _operator_page(request, "deployments")


@router.get("/economics")
async def economics(request: Request) -> Response:
    return await _operator_page(request, "economics")
