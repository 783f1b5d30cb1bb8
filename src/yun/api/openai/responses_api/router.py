"""OpenAI's Responses API: POST /v1/responses (an `InferenceRoute`, see api/inference.py), and the stored
responses of the caller's organization: GET and DELETE /v1/responses/{id}, GET .../input_items.

A stored response is the organization's alone: every read is scoped by the org id of the key, so another
tenant's id is not found (404), exactly like an id that never existed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.errors import ERROR_RESPONSES
from yun.api.inference import CallDep, InferenceRoute
from yun.api.openai.responses import EVENT_STREAM
from yun.api.openai.responses_api import service
from yun.api.openai.responses_api.protocol import ResponseCreateRequest
from yun.api.openai.responses_api.stream import ResponsesEventStream
from yun.api.openai.wire import log_ignored
from yun.api.sse import FastJSONResponse, sse_response
from yun.errors import NotFound
from yun.store.responses import StoredResponse
from yun.tenancy import Principal
from yun.tenancy.orgs import INFERENCE_ROLES, require_role

__all__ = ["router", "stored"]

router = APIRouter(route_class=InferenceRoute, tags=["inference"])
stored = APIRouter(prefix="/v1/responses", tags=["inference"], responses=ERROR_RESPONSES)


@router.post("/v1/responses", responses={200: {"content": EVENT_STREAM}, **ERROR_RESPONSES})
async def create_response(req: ResponseCreateRequest, call: CallDep) -> Response:
    """Creates a model response (OpenAI's Responses API; typed server-sent events with `stream`)."""
    log_ignored(req)
    repo = call.services.responses
    headers: dict[str, str] = {}
    if req.stream:
        events = await service.create_stream(repo, req, call, headers)
        return await sse_response(events, headers, ResponsesEventStream)
    return FastJSONResponse(await service.create(repo, req, call, headers), headers=headers)


async def _own(services: ServicesDep, principal: Principal, response_id: str) -> StoredResponse:
    require_role(principal, INFERENCE_ROLES, "read responses")
    found = await asyncio.to_thread(services.responses.get, principal.org_id, response_id)
    if found is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return found


@stored.get("/{response_id}")
async def get_response(response_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """A stored response of the caller's organization."""
    return (await _own(services, principal, response_id)).response


@stored.delete("/{response_id}")
async def delete_response(response_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Deletes a stored response; it can no longer be read nor continued (`previous_response_id`)."""
    require_role(principal, INFERENCE_ROLES, "delete responses")
    if not await asyncio.to_thread(services.responses.delete, principal.org_id, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@stored.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    """The input items of a stored response (its own, not those of the responses it continued)."""
    items = list((await _own(services, principal, response_id)).input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise NotFound(f"No input item '{after}' in response '{response_id}'.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
