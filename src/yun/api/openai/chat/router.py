"""POST /v1/chat/completions (served by the inference lane, see api/lane.py)."""

from __future__ import annotations

from starlette.responses import Response

from yun.api.lane import Call, parse
from yun.api.openai.chat.protocol import ChatCompletionRequest
from yun.api.openai.chat.service import engine_body
from yun.api.openai.wire import log_ignored
from yun.api.sse import FastJSONResponse, sse_response

__all__ = ["chat_completions"]


async def chat_completions(call: Call) -> Response:
    req = parse(call, ChatCompletionRequest)
    log_ignored(req)
    body = engine_body(req)
    headers: dict[str, str] = {}
    if req.stream:
        chunks = await call.gateway.chat_stream(
            call.principal, req.model, body, req.include_usage, headers, call.client_gone
        )
        return await sse_response(chunks, headers)
    answer = await call.gateway.chat(call.principal, req.model, body, headers, call.client_gone)
    return FastJSONResponse(answer, headers=headers)
