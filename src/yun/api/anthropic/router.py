"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API (`InferenceRoute`s, see
api/inference.py), so the `anthropic` SDK works unchanged with `base_url` set to the server's root.

A key comes as `x-api-key` (Anthropic's header) or `Authorization: Bearer`; `anthropic-version` and
`anthropic-beta` are accepted and change nothing. Errors on these routes are Anthropic's shape
(api/errors.py picks it by path).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from yun.api.anthropic.protocol import CountTokensRequest, Message, MessagesRequest, TokenCount
from yun.api.anthropic.service import chat_body, count_body, message_answer
from yun.api.anthropic.stream import AnthropicEventStream, message_events
from yun.api.inference import CallDep, InferenceRoute
from yun.api.openai.wire import log_ignored
from yun.api.sse import FastJSONResponse, sse_response

__all__ = ["ANTHROPIC_ERRORS", "router"]

_ERRORS = {
    400: "invalid_request_error: a field missing, malformed or not supported",
    401: "authentication_error: missing or invalid API key",
    402: "billing_error: the organization's credit does not cover the request",
    403: "permission_error: the key may not use this model",
    404: "not_found_error: unknown model",
    413: "request_too_large: body over the configured limit",
    429: "rate_limit_error: requests or tokens per minute over the key's limit",
    499: "the client closed the connection while the request waited",
    502: "api_error: the engine failed",
    529: "overloaded_error: no replica can take the request now; retry",
}
_ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
ANTHROPIC_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR_BODY}}}
    for status, text in _ERRORS.items()
}
_EVENT_STREAM: dict[str, Any] = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": 'With "stream": true: `event: <type>` + `data: <json>` events, message_start to message_stop.',
    }
}

router = APIRouter(route_class=InferenceRoute, tags=["anthropic"])


@router.post("/v1/messages", response_model=Message, responses={200: {"content": _EVENT_STREAM}, **ANTHROPIC_ERRORS})
async def messages(req: MessagesRequest, call: CallDep) -> Response:
    """Creates a model response for the given conversation (Anthropic's Messages API; streams with `stream`)."""
    log_ignored(req)
    body = chat_body(req)
    headers: dict[str, str] = {}
    gateway, principal = call.gateway, call.principal
    if req.stream:
        chunks = await gateway.chat_stream(principal, req.model, body, True, headers, call.client_gone, "messages")
        return await sse_response(message_events(chunks, req.stop_sequences), headers, AnthropicEventStream)
    answer = await gateway.chat(principal, req.model, body, headers, call.client_gone, "messages")
    return FastJSONResponse(message_answer(answer, req.stop_sequences), headers=headers)


@router.post("/v1/messages/count_tokens", response_model=TokenCount, responses=ANTHROPIC_ERRORS)
async def count_tokens(req: CountTokensRequest, call: CallDep) -> Response:
    """Counts the input tokens of a conversation with the model's own tokenizer (not billed)."""
    log_ignored(req)
    tokens = await call.gateway.count_chat(call.principal, req.model, count_body(req))
    return FastJSONResponse({"input_tokens": tokens})
