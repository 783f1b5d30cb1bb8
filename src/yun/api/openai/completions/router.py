"""POST /v1/completions (an `InferenceRoute`, see api/inference.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from yun.api.errors import ERROR_RESPONSES
from yun.api.inference import CallDep, InferenceRoute
from yun.api.openai.completions.protocol import CompletionRequest
from yun.api.openai.responses import EVENT_STREAM, Completion
from yun.api.openai.wire import log_ignored
from yun.api.sse import FastJSONResponse, sse_response
from yun.engines import JSON
from yun.errors import UnsupportedParameter

__all__ = ["router"]

router = APIRouter(route_class=InferenceRoute, tags=["inference"])


def _prompts(req: CompletionRequest) -> list[Any]:
    p = req.prompt
    if isinstance(p, str):
        return [p]
    if p and isinstance(p[0], int):
        return [p]  # one prompt given as token ids
    return list(p)


def _engine_body(req: CompletionRequest) -> JSON:
    if req.echo:
        raise UnsupportedParameter("echo is not supported", param="echo")
    if req.suffix:
        raise UnsupportedParameter("suffix (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of not in (None, 1):
        raise UnsupportedParameter("best_of > 1 is not supported", param="best_of")
    body: JSON = {**req.sampling(), "max_tokens": req.max_tokens}
    if req.logprobs is not None:
        body["logprobs"] = req.logprobs
    return body


@router.post(
    "/v1/completions", response_model=Completion, responses={200: {"content": EVENT_STREAM}, **ERROR_RESPONSES}
)
async def completions(req: CompletionRequest, call: CallDep) -> Response:
    """Creates a completion for the given prompt (OpenAI's legacy API; streams with `stream`)."""
    gateway, principal = call.gateway, call.principal
    log_ignored(req)
    body, prompts = _engine_body(req), _prompts(req)
    headers: dict[str, str] = {}
    if req.stream:
        chunks = await gateway.completions_stream(
            principal, req.model, body, prompts, req.include_usage, headers, call.client_gone
        )
        return await sse_response(chunks, headers)
    answer = await gateway.completions(principal, req.model, body, prompts, headers, call.client_gone)
    return FastJSONResponse(answer, headers=headers)
