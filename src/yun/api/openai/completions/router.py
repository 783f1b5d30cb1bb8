"""POST /v1/completions (an `InferenceRoute`, see api/inference.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from yun.api.errors import ERROR_RESPONSES
from yun.api.inference import CallDep, InferenceRoute
from yun.api.openai.completions.protocol import CompletionRequest
from yun.api.openai.engine_check import require_llamacpp
from yun.api.openai.responses import EVENT_STREAM, Completion
from yun.api.sse import FastJSONResponse, sse_response
from yun.engines import JSON
from yun.errors import InvalidRequest, UnsupportedParameter

__all__ = ["router"]

router = APIRouter(route_class=InferenceRoute, tags=["inference"])

_MAX_CHOICES = 128  # prompts x n: each is one engine request under the one hold


def _prompts(req: CompletionRequest) -> list[Any]:
    p = req.prompt
    if isinstance(p, str):
        return [p]
    if p and isinstance(p[0], int):
        return [p]  # one prompt given as token ids
    return list(p)


def _engine_body(req: CompletionRequest, extensions: list[str]) -> JSON:
    if req.suffix:
        raise UnsupportedParameter("suffix (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of not in (None, 1, req.n or 1):
        # best_of == n is n; more would rank candidates by log probability, which Yun does not do.
        raise UnsupportedParameter("best_of other than 1 or n is not supported", param="best_of")
    body: JSON = {**req.sampling(extensions), "max_tokens": req.output_bound(req.max_tokens)}
    if req.logprobs is not None:
        body["logprobs"] = req.logprobs
    if req.echo:
        body["echo"] = True
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        if "json_schema" in body:
            raise InvalidRequest("give either response_format or json_schema, not both", param="response_format")
        # llama.cpp's text completions take the schema as `json_schema` (its chat endpoint takes both).
        body["json_schema"] = fmt.schema_ or {"type": "object"}
    return body


@router.post(
    "/v1/completions", response_model=Completion, responses={200: {"content": EVENT_STREAM}, **ERROR_RESPONSES}
)
async def completions(req: CompletionRequest, call: CallDep) -> Response:
    """Creates a completion for the given prompt (OpenAI's legacy API; streams with `stream`)."""
    gateway, principal = call.gateway, call.principal
    extensions = req.extensions()
    body, prompts = _engine_body(req, extensions), _prompts(req)
    if req.response_format is not None and req.response_format.type != "text":
        extensions.append("response_format")  # llama.cpp's, as `json_schema`
    if len(prompts) * (req.n or 1) > _MAX_CHOICES:
        raise InvalidRequest(f"prompts x n may be at most {_MAX_CHOICES} choices", param="n")
    require_llamacpp(gateway, principal, req.model, "chat", extensions)
    headers: dict[str, str] = {}
    if req.stream:
        chunks = await gateway.completions_stream(
            principal, req.model, body, prompts, req.include_usage, headers, call.client_gone
        )
        return await sse_response(chunks, headers)
    answer = await gateway.completions(principal, req.model, body, prompts, headers, call.client_gone)
    return FastJSONResponse(answer, headers=headers)
