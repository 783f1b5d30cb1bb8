"""POST /v1/embeddings (served by the inference lane, see api/lane.py)."""

from __future__ import annotations

from yun.api.lane import Call, parse
from yun.api.openai.embeddings.protocol import EmbeddingRequest
from yun.api.openai.wire import log_ignored
from yun.api.sse import FastJSONResponse
from yun.errors import UnsupportedParameter

__all__ = ["embeddings"]


async def embeddings(call: Call) -> FastJSONResponse:
    req = parse(call, EmbeddingRequest)
    gateway, principal = call.gateway, call.principal
    log_ignored(req)
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
