"""POST /v1/chat/completions (an `InferenceRoute`, see api/inference.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from yun.api.errors import ERROR_RESPONSES
from yun.api.inference import CallDep, InferenceRoute
from yun.api.openai.chat.protocol import ChatCompletionRequest
from yun.api.openai.chat.service import engine_body
from yun.api.openai.engine_check import require_llamacpp
from yun.api.openai.responses import EVENT_STREAM, ChatCompletion
from yun.api.sse import FastJSONResponse, sse_response

__all__ = ["router"]

router = APIRouter(route_class=InferenceRoute, tags=["inference"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": EVENT_STREAM}, **ERROR_RESPONSES},
)
async def chat_completions(req: ChatCompletionRequest, call: CallDep) -> Response:
    """Creates a model response for the given chat conversation (OpenAI's API; streams with `stream`)."""
    extensions = req.extensions()
    body = engine_body(req, extensions)
    require_llamacpp(call.gateway, call.principal, req.model, "chat", extensions)
    headers: dict[str, str] = {}
    if req.stream:
        chunks = await call.gateway.chat_stream(
            call.principal, req.model, body, req.include_usage, headers, call.client_gone
        )
        return await sse_response(chunks, headers)
    answer = await call.gateway.chat(call.principal, req.model, body, headers, call.client_gone)
    return FastJSONResponse(answer, headers=headers)
