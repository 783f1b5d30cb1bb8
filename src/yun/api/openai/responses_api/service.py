"""One Responses request: read the conversation it continues, run it as a chat through the gateway (so
it is held, metered and settled as chat is: one usage record, endpoint `responses`, whose request id is
the response's id), answer it, and store it when asked (`store`, OpenAI's default true).

Store reads run off the event loop (with PostgreSQL each is a network round trip); a stored response is
written by the request path's group-committing writer (store/responses.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Future

from yun.api.inference import Call
from yun.api.openai.responses_api.protocol import ResponseCreateRequest
from yun.api.openai.responses_api.stream import ResponseEvents
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


def _stored(req: ResponseCreateRequest, org_id: str, items: list[JSON], response: JSON) -> StoredResponse:
    return StoredResponse(
        id=response["id"],
        org_id=org_id,
        model_id=response["model"],
        input_items=items,
        response=response,
        previous_response_id=req.previous_response_id,
    )


async def create(repo: ResponseRepository, req: ResponseCreateRequest, call: Call, headers: dict[str, str]) -> JSON:
    org_id = call.principal.org_id
    items, body = await _prepare(repo, req, org_id)
    answered: list[JSON] = []
    stored: list[Future[bool]] = []

    def respond(answer: JSON) -> None:
        # Called with the settlement queued: the stored response joins its transaction (one commit).
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
        answered.append(response)
        if req.store:
            stored.append(repo.submit(_stored(req, org_id, items, response)))

    await call.gateway.chat(
        call.principal, req.model, body, headers, call.client_gone, endpoint=ENDPOINT, on_answer=respond
    )
    if stored:
        await repo.written(stored[0])  # committed before the answer: read your writes
    return answered[0]


async def create_stream(
    repo: ResponseRepository, req: ResponseCreateRequest, call: Call, headers: dict[str, str]
) -> AsyncIterator[list[JSON]]:
    org_id = call.principal.org_id
    items, body = await _prepare(repo, req, org_id)

    def store(response: JSON) -> Future[bool]:
        return repo.submit(_stored(req, org_id, items, response))

    events = ResponseEvents(req, store if req.store else None, repo.written)
    chunks = await call.gateway.chat_stream(
        call.principal, req.model, body, True, headers, call.client_gone, endpoint=ENDPOINT, on_settle=events.settling
    )
    return events.stream(chunks)
