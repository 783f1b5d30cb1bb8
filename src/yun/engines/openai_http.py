"""Engine adapter for anything that speaks OpenAI's HTTP API: xllamacpp replicas, vLLM, SGLang,
llama-server or a hosted provider. Transport errors are translated here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from yun.engines.base import JSON
from yun.errors import (
    ContextLengthExceeded,
    EngineFailure,
    EngineUnavailable,
    InvalidRequest,
)

__all__ = ["OpenAIHTTPEngine"]

_CONTEXT_MARKERS = (
    "exceed_context_size",
    "context length",
    "context_length",
    "maximum context",
    "too large to process",  # llama.cpp, embedding input longer than the batch
)


def _error_message(response: httpx.Response) -> tuple[str, str]:
    try:
        err: Any = response.json().get("error", {})
    except (ValueError, AttributeError):
        return response.text[:500], ""
    if isinstance(err, dict):
        return str(err.get("message", "")), f"{err.get('type', '')} {err.get('code', '')}"
    return str(err), ""


def _raise_for(response: httpx.Response, name: str) -> None:
    if response.status_code < 400:
        return
    message, kind = _error_message(response)
    lowered = f"{message} {kind}".lower()
    if any(m in lowered for m in _CONTEXT_MARKERS):
        raise ContextLengthExceeded(message or "the input is longer than the model's context")
    if response.status_code in (400, 422):
        raise InvalidRequest(message or "the engine refused the request")
    if response.status_code in (502, 503, 504):
        raise EngineUnavailable(f"engine {name} is unavailable ({response.status_code})")
    raise EngineFailure(f"engine {name} failed with HTTP {response.status_code}: {message[:200]}")


class OpenAIHTTPEngine:
    """One replica reached over HTTP. `base_url` is the part before `/v1/...`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        llamacpp: bool = False,
        timeout_s: float = 600.0,
        max_connections: int = 256,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._llamacpp = llamacpp
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,
        )

    @property
    def speaks_llamacpp(self) -> bool:
        return self._llamacpp

    def _adapt(self, body: JSON, stream: bool = False) -> JSON:
        if not self._llamacpp:
            return body
        if body.get("tools"):
            # llama.cpp's own tool-call parser drops characters of Qwen2.5's calls; the gateway parses them.
            body = {**body, "parse_tool_calls": False}
        if stream:
            # Every chunk then carries the engine's running token counts, so a stream cut short by the
            # client is billed by the engine's own count of what it generated.
            body = {**body, "timings_per_token": True}
        return body

    async def request(self, path: str, body: JSON) -> JSON:
        body = self._adapt(body)
        try:
            response = await self._client.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise EngineFailure(f"engine {self.name} timed out") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"engine {self.name} is unreachable") from exc
        _raise_for(response, self.name)
        try:
            data: JSON = response.json()
        except ValueError as exc:
            raise EngineFailure(f"engine {self.name} returned invalid JSON") from exc
        return data

    async def stream(self, path: str, body: JSON) -> AsyncIterator[JSON]:
        body = self._adapt(body, stream=True)
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response, self.name)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        event = json.loads(payload)
                    except ValueError as exc:
                        raise EngineFailure(f"engine {self.name} sent a malformed event") from exc
                    if isinstance(event, dict) and "error" in event and "choices" not in event:
                        raise EngineFailure(f"engine {self.name} failed mid-stream: {event['error']}")
                    yield event
        except httpx.TimeoutException as exc:
            raise EngineFailure(f"engine {self.name} timed out") from exc
        except httpx.TransportError as exc:
            # Leaving the `async with` closes the connection, which is how llama.cpp learns to stop.
            raise EngineFailure(f"engine {self.name} dropped the stream") from exc

    async def healthy(self) -> bool:
        path = "/health" if self._llamacpp else "/v1/models"
        try:
            response = await self._client.get(path, timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()
