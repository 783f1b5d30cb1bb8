"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from yun.api.deps import CallerDep, GatewayDep, read_body
from yun.api.openai.chat.protocol import ChatCompletionRequest
from yun.api.openai.chat.service import engine_body
from yun.api.openai.wire import log_ignored
from yun.api.sse import sse_response

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, principal: CallerDep, gateway: GatewayDep) -> Response:
    req = await read_body(request, ChatCompletionRequest)
    log_ignored(req)
    body = engine_body(req)
    headers: dict[str, str] = {}
    if req.stream:
        chunks = await gateway.chat_stream(principal, req.model, body, req.include_usage, headers)
        return await sse_response(chunks, headers)
    return JSONResponse(await gateway.chat(principal, req.model, body, headers), headers=headers)
