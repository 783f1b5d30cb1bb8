"""The request path: pick a replica, call its engine, relay the answer, count what it cost.

Everything here runs on every request, so it does only that; anything slow (invoices, rollups)
reads the usage records later, off this path.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Callable
from typing import Any

from yun.cluster import Deployment, LocalCluster
from yun.engines import JSON
from yun.errors import EngineFailure, InvalidRequest, YunError
from yun.gateway.metrics import Metrics
from yun.gateway.tools import ToolStreamBuffer, parse_tool_calls
from yun.gateway.usage import Usage, usage_from

__all__ = ["Gateway", "UsageSink"]

log = logging.getLogger("yun.gateway")

UsageSink = Callable[[Usage], None]
"""Receives one `Usage` per finished request (metrics now; the metering ledger builds on it)."""


def _tool_names(body: JSON) -> list[str]:
    if body.get("tool_choice") == "none":
        return []
    names = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


class Gateway:
    def __init__(self, cluster: LocalCluster, metrics: Metrics, *, log_prompts: bool = False) -> None:
        self.cluster = cluster
        self.metrics = metrics
        # Prompts are tenants' data: logged only when an operator turns this on (never in production).
        self.log_prompts = log_prompts
        self.sinks: list[UsageSink] = [self._observe]

    # -- routing -------------------------------------------------------------------------------
    def deployment(self, model_id: str, kind: str) -> Deployment:
        deployment = self.cluster.get(model_id)
        if deployment.spec.kind != kind:
            use = "/v1/embeddings" if deployment.spec.kind == "embedding" else "/v1/chat/completions"
            raise InvalidRequest(
                f"'{model_id}' is a {deployment.spec.kind} model and cannot serve this endpoint; use {use}",
                param="model",
                code="model_not_supported",
            )
        return deployment

    def _prepare(self, deployment: Deployment, body: JSON) -> JSON:
        if self.log_prompts:
            log.info("request to %s: %s", deployment.spec.model_id, json.dumps(body, ensure_ascii=False)[:8000])
        body = dict(body)
        body["model"] = deployment.spec.upstream_model or deployment.spec.model_id
        return body

    # -- usage ---------------------------------------------------------------------------------
    def _observe(self, usage: Usage) -> None:
        m = self.metrics
        m.requests.labels(usage.endpoint, usage.model_id, usage.status).inc()
        m.latency.labels(usage.endpoint, usage.model_id).observe(usage.latency_s)
        if usage.ttft_s is not None:
            m.ttft.labels(usage.model_id).observe(usage.ttft_s)
        m.tokens.labels(usage.model_id, "prompt").inc(usage.prompt_tokens)
        m.tokens.labels(usage.model_id, "completion").inc(usage.completion_tokens)

    def _settle(self, usage: Usage, started: float) -> None:
        usage.latency_s = time.perf_counter() - started
        for sink in self.sinks:
            try:
                sink(usage)
            except Exception:  # noqa: BLE001 - one failing sink must not lose the others' record
                log.exception("usage sink failed for %s", usage.request_id)

    # -- chat ----------------------------------------------------------------------------------
    async def chat(self, model_id: str, body: JSON) -> JSON:
        deployment = self.deployment(model_id, "chat")
        usage = Usage("chatcmpl-" + uuid.uuid4().hex, "chat.completions", model_id)
        started = time.perf_counter()
        try:
            async with deployment.lease() as engine:
                usage.replica = engine.name
                data = await engine.request("/v1/chat/completions", self._prepare(deployment, body))
            usage.add(usage_from(data))
            names = _tool_names(body)
            for choice in data.get("choices") or []:
                message = choice.get("message") or {}
                if names and not message.get("tool_calls"):
                    calls = parse_tool_calls(message.get("content"), names)
                    if calls:
                        message["tool_calls"] = calls
                        message["content"] = None
                        choice["finish_reason"] = "tool_calls"
            return self._finish(data, usage, "chat.completion")
        except YunError:
            usage.status = "error"
            raise
        finally:
            self._settle(usage, started)

    def _finish(self, data: JSON, usage: Usage, obj: str) -> JSON:
        data.pop("timings", None)
        data["id"] = usage.request_id
        data["object"] = obj
        data["model"] = usage.model_id
        data["usage"] = usage.as_openai()
        return data

    async def chat_stream(self, model_id: str, body: JSON, include_usage: bool) -> AsyncIterator[JSON]:
        deployment = self.deployment(model_id, "chat")
        usage = Usage("chatcmpl-" + uuid.uuid4().hex, "chat.completions", model_id)
        return self._relay(deployment, "/v1/chat/completions", body, usage, include_usage, _tool_names(body))

    async def _relay(
        self,
        deployment: Deployment,
        path: str,
        body: JSON,
        usage: Usage,
        include_usage: bool,
        tool_names: list[str],
        index_offset: int = 0,
    ) -> AsyncIterator[JSON]:
        """Relay an engine stream chunk by chunk, holding back only text that may be a tool call."""
        upstream = self._prepare(deployment, body)
        upstream["stream"] = True
        # Always ask the engine for its own count: billing never trusts the client's choice.
        upstream["stream_options"] = {"include_usage": True}
        buffer = ToolStreamBuffer(tool_names) if tool_names else None
        started = time.perf_counter()
        created = int(time.time())
        try:
            async with deployment.lease() as engine:
                usage.replica = engine.name
                async for chunk in engine.stream(path, upstream):
                    chunk.pop("timings", None)
                    chunk["id"] = usage.request_id
                    chunk["model"] = usage.model_id
                    chunk.setdefault("created", created)
                    engine_usage = usage_from(chunk)
                    if engine_usage is not None:
                        usage.add(engine_usage)
                        chunk.pop("usage")
                        if not chunk.get("choices"):
                            continue
                    if usage.ttft_s is None and any(_has_output(c) for c in chunk.get("choices") or []):
                        usage.ttft_s = time.perf_counter() - started
                    for out in _rewrite(chunk, buffer, index_offset):
                        yield out
            if include_usage:
                yield {
                    "id": usage.request_id,
                    "object": chunk_object(path),
                    "created": created,
                    "model": usage.model_id,
                    "choices": [],
                    "usage": usage.as_openai(),
                }
        except YunError:
            usage.status = "error"
            raise
        except BaseException:
            # The client went away (cancellation / generator closed): leaving the lease closed the
            # engine stream, which makes llama.cpp stop generating.
            usage.status = "aborted"
            raise
        finally:
            self._settle(usage, started)

    # -- completions ---------------------------------------------------------------------------
    async def completions(self, model_id: str, body: JSON, prompts: list[Any]) -> JSON:
        """One engine call per prompt: llama.cpp's own batch answer under-counts usage for lists."""
        deployment = self.deployment(model_id, "chat")
        usage = Usage("cmpl-" + uuid.uuid4().hex, "completions", model_id)
        started = time.perf_counter()
        choices: list[JSON] = []
        try:
            async with deployment.lease() as engine:
                usage.replica = engine.name
                for i, prompt in enumerate(prompts):
                    data = await engine.request(
                        "/v1/completions", self._prepare(deployment, {**body, "prompt": prompt})
                    )
                    usage.add(usage_from(data))
                    for choice in data.get("choices") or []:
                        choice["index"] = i
                        choices.append(choice)
            result: JSON = {"created": int(time.time()), "choices": choices, "system_fingerprint": None}
            return self._finish(result, usage, "text_completion")
        except YunError:
            usage.status = "error"
            raise
        finally:
            self._settle(usage, started)

    async def completions_stream(
        self, model_id: str, body: JSON, prompts: list[Any], include_usage: bool
    ) -> AsyncIterator[JSON]:
        deployment = self.deployment(model_id, "chat")

        async def run() -> AsyncIterator[JSON]:
            for i, prompt in enumerate(prompts):
                usage = Usage("cmpl-" + uuid.uuid4().hex, "completions", model_id)
                async for chunk in self._relay(
                    deployment, "/v1/completions", {**body, "prompt": prompt}, usage, include_usage, [], i
                ):
                    yield chunk

        return run()

    # -- embeddings ----------------------------------------------------------------------------
    async def embeddings(self, model_id: str, body: JSON, encoding: str) -> JSON:
        deployment = self.deployment(model_id, "embedding")
        usage = Usage("embd-" + uuid.uuid4().hex, "embeddings", model_id)
        started = time.perf_counter()
        try:
            async with deployment.lease() as engine:
                usage.replica = engine.name
                upstream = self._prepare(deployment, body)
                upstream["encoding_format"] = "float"
                data = await engine.request("/v1/embeddings", upstream)
            usage.add(usage_from(data))
            items = data.get("data")
            if not isinstance(items, list):
                raise EngineFailure("the engine returned no embeddings")
            out = []
            for i, item in enumerate(items):
                vector = item.get("embedding") or []
                value: Any = vector
                if encoding == "base64":
                    value = base64.b64encode(array("f", vector).tobytes()).decode()
                out.append({"object": "embedding", "index": item.get("index", i), "embedding": value})
            return {
                "object": "list",
                "data": out,
                "model": model_id,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            }
        except YunError:
            usage.status = "error"
            raise
        finally:
            self._settle(usage, started)


def chunk_object(path: str) -> str:
    return "chat.completion.chunk" if path.endswith("chat/completions") else "text_completion"


def _has_output(choice: JSON) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))
    return bool(choice.get("text"))


def _rewrite(chunk: JSON, buffer: ToolStreamBuffer | None, index_offset: int) -> list[JSON]:
    """Apply tool-call holding and choice re-indexing to one engine chunk; may yield 0-3 chunks."""
    choices = chunk.get("choices") or []
    if index_offset:
        for c in choices:
            c["index"] = c.get("index", 0) + index_offset
    if buffer is None or not choices:
        return [chunk]
    choice = choices[0]
    delta = choice.get("delta") or {}
    text = delta.get("content")
    if text:
        delta["content"] = buffer.feed(text)
        if not delta["content"] and choice.get("finish_reason") is None:
            return []
    if choice.get("finish_reason") is None:
        return [chunk]
    rest, calls = buffer.finish()
    out: list[JSON] = []
    base = {k: v for k, v in chunk.items() if k != "choices"}
    if calls:
        tool_deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        out.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": tool_deltas}, "finish_reason": None}]})
        choice["finish_reason"] = "tool_calls"
        delta.pop("content", None)
    elif rest:
        out.append({**base, "choices": [{"index": 0, "delta": {"content": rest}, "finish_reason": None}]})
    out.append(chunk)
    return out
