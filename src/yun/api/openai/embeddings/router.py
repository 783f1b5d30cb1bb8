"""POST /v1/embeddings (an `InferenceRoute`, see api/inference.py)."""

from __future__ import annotations

from fastapi import APIRouter

from yun.api.errors import ERROR_RESPONSES
from yun.api.inference import CallDep, InferenceRoute
from yun.api.openai.embeddings.protocol import EmbeddingRequest
from yun.api.openai.responses import CreateEmbeddingResponse
from yun.api.openai.wire import refuse_unknown
from yun.api.sse import FastJSONResponse
from yun.errors import UnsupportedParameter

__all__ = ["router"]

router = APIRouter(route_class=InferenceRoute, tags=["inference"])


@router.post("/v1/embeddings", response_model=CreateEmbeddingResponse, responses=ERROR_RESPONSES)
async def embeddings(req: EmbeddingRequest, call: CallDep) -> FastJSONResponse:
    """Creates an embedding vector for each input (OpenAI's API)."""
    gateway, principal = call.gateway, call.principal
    refuse_unknown(req)
    native = gateway.deployment(req.model, "embedding", principal).spec.dimensions
    body: dict[str, object] = {"input": req.input}
    if native is None and req.dimensions is not None:
        body["dimensions"] = req.dimensions  # an external upstream decides for itself
    elif req.dimensions is not None and req.dimensions != native:
        raise UnsupportedParameter(
            f"'{req.model}' returns {native}-dimensional embeddings and cannot shorten them; omit 'dimensions'",
            param="dimensions",
        )
    headers: dict[str, str] = {}
    data = await gateway.embeddings(principal, req.model, body, req.encoding_format, headers, call.client_gone)
    return FastJSONResponse(data, headers=headers)
