"""One Responses request: read the conversation it continues, run it as a chat through the gateway (so
it is held, metered and settled as chat is: one usage record, endpoint `responses`, whose request id is
the response's id), answer it, and store it when asked (`store`, OpenAI's default true).

Store reads run off the event loop (with PostgreSQL each is a network round trip); a stored response is
written by the request path's group-committing writer (store/responses.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from yun.api.inference import Call
from yun.api.openai.responses_api.protocol import ResponseCreateRequest
from yun.api.openai.responses_api.stream import response_events
from yun.api.openai.responses_api.translate import (
    chat_body,
    input_items,
    response_object,
    response_output,
    response_usage,
)
from yun.engines import JSON
from yun.errors import InvalidRequest
from yun.store.responses import ResponseRepository, StoredResponse

__all__ = ["ENDPOINT", "create", "create_stream"]

ENDPOINT = "responses"
"""The usage records' endpoint of this API (its hold's request ids are `resp_…`)."""


async def _prepare(repo: ResponseRepository, req: ResponseCreateRequest, org_id: str) -> tuple[list[JSON], JSON]:
    items = input_items(req.input)
    if not items:
        raise InvalidRequest("input is required (a string or a list of items)", param="input")
    history: list[JSON] = []
    if req.previous_response_id is not None:
        for stored in await asyncio.to_thread(repo.chain, org_id, req.previous_response_id):
            history.extend(stored.input_items)
            history.extend(stored.response.get("output") or [])
    return items, chat_body(req, history, items)


async def _store(
    repo: ResponseRepository, req: ResponseCreateRequest, org_id: str, items: list[JSON], response: JSON
) -> None:
    if not req.store:
        return
    stored = StoredResponse(
        id=response["id"],
        org_id=org_id,
        model_id=response["model"],
        input_items=items,
        response=response,
        previous_response_id=req.previous_response_id,
    )
    await repo.store(stored)


async def create(repo: ResponseRepository, req: ResponseCreateRequest, call: Call, headers: dict[str, str]) -> JSON:
    org_id = call.principal.org_id
    items, body = await _prepare(repo, req, org_id)
    answer = await call.gateway.chat(call.principal, req.model, body, headers, call.client_gone, endpoint=ENDPOINT)
    output, truncated = response_output(answer)
    response = response_object(
        req,
        answer["id"],
        answer["model"],
        status="incomplete" if truncated else "completed",
        output=output,
        usage=response_usage(answer["usage"]),
        created_at=answer.get("created"),
    )
    await _store(repo, req, org_id, items, response)
    return response


async def create_stream(
    repo: ResponseRepository, req: ResponseCreateRequest, call: Call, headers: dict[str, str]
) -> AsyncIterator[list[JSON]]:
    org_id = call.principal.org_id
    items, body = await _prepare(repo, req, org_id)
    chunks = await call.gateway.chat_stream(
        call.principal, req.model, body, True, headers, call.client_gone, endpoint=ENDPOINT
    )

    async def finished(response: JSON) -> None:
        await _store(repo, req, org_id, items, response)

    return response_events(req, chunks, finished)
