"""The request path: authorize the model, hold credit, pick a replica, relay the answer, settle.

Everything here runs on every request, so it does only that; anything slow (statements, rollup
queries, dashboards) reads the settled records later, off this path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
import time
from array import array
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from yun.billing import BillingService, Estimate, Hold, Outcome
from yun.cluster import ClientGone, Deployment, LocalCluster
from yun.engines import JSON
from yun.errors import (
    ClientDisconnected,
    ContextLengthExceeded,
    EngineFailure,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from yun.gateway.metrics import Metrics
from yun.gateway.prompt import PromptCount, PromptCounts
from yun.gateway.ratelimit import Limits, RateLimitBackendError, RateLimitStore
from yun.gateway.relay import chunk_object, has_output, rewrite
from yun.gateway.tools import ToolStreamBuffer, parse_tool_calls
from yun.gateway.usage import Usage, usage_from
from yun.tenancy import Principal

__all__ = ["Gateway", "UsageSink"]

log = logging.getLogger("yun.gateway")

UsageSink = Callable[[Usage], None]
"""Receives one `Usage` per finished request (after it is settled)."""

_DEFAULT_MAX_OUTPUT = 4096  # when neither the client nor the model card bounds the output


def _failed(exc: BaseException) -> str:
    """The usage status of a request that ended with `exc`: a client that left (cancellation, closed
    generator, disconnected while queued) is `aborted` and billed what the engine generated; anything
    else is an `error`, billed what the engine generated before failing (nothing, if nothing)."""
    return "aborted" if not isinstance(exc, Exception) or isinstance(exc, ClientDisconnected) else "error"


def _log_failure(job: asyncio.Future[None]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("background bookkeeping failed (open holds are settled by recovery)", exc_info=job.exception())


def _log_failed_progress(written: Future[bool]) -> None:
    if written.exception() is not None:
        log.warning("recording stream progress failed (a crash bills the record before)", exc_info=written.exception())


def request_id(prefix: str) -> str:
    """`prefix` + 32 hex digits: milliseconds since the epoch (48 bits), then 80 random bits (as UUIDv7).

    Time-ordered, so the usage, reservation and ledger indexes keyed by it grow at their right edge: a
    random id (uuid4) put every insert on a different index page, and each such page is one more page in
    the commit's WAL write and in the next checkpoint. Not a secret: unique is all it must be.
    """
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def _tool_names(body: JSON) -> list[str]:
    if body.get("tool_choice") == "none":
        return []
    names = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


@dataclass
class _Call:
    """One accepted request: its hold must be settled exactly once, whatever happens."""

    deployment: Deployment
    usage: Usage
    hold: Hold
    scopes: list[tuple[str, Limits]]
    estimated_tokens: int
    started: float = field(default_factory=time.perf_counter)
    settled: bool = False
    client_gone: ClientGone | None = None
    """Returns once the client disconnected; a request still queued for a replica then leaves."""
    progress_at: float = math.inf
    """When (`perf_counter`) the next progress record is due; set for streams only."""
    progress: tuple[int, int, int] = (0, 0, 0)
    """(prompt, completion) tokens last recorded on the hold."""


class Gateway:
    def __init__(
        self,
        cluster: LocalCluster,
        metrics: Metrics,
        billing: BillingService,
        limiter: RateLimitStore,
        *,
        log_prompts: bool = False,
        progress_interval_s: float = 1.0,
    ) -> None:
        self.cluster = cluster
        self.metrics = metrics
        self.billing = billing
        self.limiter = limiter
        self._background: set[asyncio.Task[None]] = set()
        # Prompts are tenants' data: logged only when an operator turns this on (never in production).
        self.log_prompts = log_prompts
        # How often a running stream's tokens so far are written onto its hold (for crash recovery).
        self.progress_interval_s = progress_interval_s
        self.sinks: list[UsageSink] = [self._observe]
        self.prompts = PromptCounts()

    # -- routing and admission -----------------------------------------------------------------
    def deployment(self, model_id: str, kind: str, principal: Principal | None = None) -> Deployment:
        deployment = self.cluster.get(model_id)
        if principal is not None and principal.allowed_models is not None and model_id not in principal.allowed_models:
            raise PermissionDenied(f"This API key may not use the model '{model_id}'.", param="model")
        if deployment.spec.kind != kind:
            use = "/v1/embeddings" if deployment.spec.kind == "embedding" else "/v1/chat/completions"
            raise InvalidRequest(
                f"'{model_id}' is a {deployment.spec.kind} model and cannot serve this endpoint; use {use}",
                param="model",
                code="model_not_supported",
            )
        return deployment

    def max_output(self, deployment: Deployment, requested: int | None, prompt: PromptCount) -> int:
        """The output bound we hold credit for and then impose on the engine, so it cannot exceed the hold.

        With the prompt counted, the output can never exceed the served context left after it (the
        engine stops there): that is the default, and a larger request is held only for what can run.
        """
        context = deployment.spec.context_length
        if context is None:
            return _DEFAULT_MAX_OUTPUT if requested is None else requested
        if prompt.exact:
            left = context - prompt.tokens
            return left if requested is None else min(requested, left)
        if requested is not None:
            return requested
        return max(16, context - prompt.tokens)  # a byte bound: only a guess at what is left

    @staticmethod
    def check_context(deployment: Deployment, prompts: list[PromptCount], what: str, param: str) -> None:
        """A counted prompt the served context cannot hold is refused before any rate limit, as OpenAI
        does, with a 400 an SDK does not retry. The engine needs one token of room to answer (embedding
        models need none)."""
        context = deployment.spec.context_length
        if context is None:
            return
        room = 0 if deployment.spec.kind == "embedding" else 1
        for p in prompts:
            if p.exact and p.tokens + room > context:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {context} tokens. However, your {what} resulted in "
                    f"{p.tokens} tokens. Please reduce the length of the {what}.",
                    param=param,
                )

    @staticmethod
    def _scopes(principal: Principal) -> list[tuple[str, Limits]]:
        scopes = []
        if principal.rpm_limit is not None or principal.tpm_limit is not None:
            scopes.append((f"key:{principal.key_id}", Limits(principal.rpm_limit, principal.tpm_limit)))
        if principal.org_rpm_limit is not None or principal.org_tpm_limit is not None:
            scopes.append((f"org:{principal.org_id}", Limits(principal.org_rpm_limit, principal.org_tpm_limit)))
        return scopes

    async def _admit(self, scopes: list[tuple[str, Limits]], tokens: int, headers: dict[str, str]) -> None:
        """Rate limits first (cheap, refuses floods before they touch the database), then credit."""
        if not scopes:
            return
        try:
            decision = await self.limiter.acquire(scopes, tokens)
        except RateLimitBackendError:
            # Limits protect capacity, credit holds protect money: with the limit store down we keep
            # serving (holds still guard every balance) and say so loudly.
            log.warning("rate-limit store unavailable; admitting without limits", exc_info=True)
            return
        headers.update(decision.headers())
        if decision.allowed:
            return
        if decision.reason == "tokens_exceed_limit":
            message = (
                f"Request too large: it may use up to {tokens} tokens, more than the tokens-per-minute "
                "limit allows. Lower max_tokens or shorten the prompt."
            )
        else:
            which = "requests" if decision.reason == "rpm" else "tokens"
            message = (
                f"Rate limit reached for {which} per minute on this {(decision.scope or 'key').split(':')[0]}. "
                f"Please try again in {decision.retry_after_s:.1f}s."
            )
        raise RateLimited(message, retry_after_s=decision.retry_after_s, headers=decision.headers())

    async def _open(
        self,
        principal: Principal,
        deployment: Deployment,
        endpoint: str,
        prefix: str,
        est: Estimate,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> _Call:
        usage = Usage(request_id(prefix), endpoint, deployment.spec.model_id)
        scopes = self._scopes(principal)
        tokens = est.prompt_tokens + est.max_output_tokens
        await self._admit(scopes, tokens, headers)
        try:
            hold = await self.billing.reserve(
                usage.request_id, principal.org_id, principal.key_id, deployment.spec.model_id, endpoint, est
            )
        except BaseException:
            self._adjust_later(scopes, -tokens)  # refused before any compute: give the tokens back
            raise
        return _Call(deployment, usage, hold, scopes, tokens, client_gone=client_gone)

    def _adjust_later(self, scopes: list[tuple[str, Limits]], delta: int) -> None:
        if not scopes or delta == 0:
            return
        task = asyncio.ensure_future(self.limiter.adjust(scopes, delta))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def _close(self, call: _Call, status: str | None = None) -> None:
        """Settle once. Usage is the engine's own count; an error before any output bills nothing.

        The settlement is queued to the money writer before the first await, so no cancellation can
        stop it: when a client goes away, the server cancels this coroutine (repeatedly, with anyio),
        but the hold still gets settled and the usage sinks (metrics) still see the request.
        """
        if call.settled:
            return
        call.settled = True
        usage = call.usage
        if status is not None:
            usage.status = status
        usage.close_live()  # an unfinished engine call (aborted stream) counts what it generated
        usage.latency_s = time.perf_counter() - call.started
        used = usage.prompt_tokens + usage.completion_tokens
        self._adjust_later(call.scopes, used - call.estimated_tokens)  # TPM counts what was really used
        cost, written = self.billing.settle(
            call.hold,
            Outcome(
                replica=usage.replica,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                status=usage.status,
                latency_s=usage.latency_s,
                ttft_s=usage.ttft_s,
            ),
        )
        usage.cost = cost
        done = self.billing.written(written)
        done.add_done_callback(lambda d: self._settled(usage, d))
        await asyncio.shield(done)  # if this coroutine is cancelled, the write still completes

    def _settled(self, usage: Usage, done: asyncio.Future[bool]) -> None:
        if done.exception() is not None:
            log.error("settling %s failed (recovery settles its hold)", usage.request_id, exc_info=done.exception())
        for sink in self.sinks:
            try:
                sink(usage)
            except Exception:  # noqa: BLE001 - one failing sink must not lose the others' record
                log.exception("usage sink failed for %s", usage.request_id)

    def _prepare(self, deployment: Deployment, body: JSON) -> JSON:
        if self.log_prompts:
            log.info("request to %s: %s", deployment.spec.model_id, json.dumps(body, ensure_ascii=False)[:8000])
        body = dict(body)
        body["model"] = deployment.spec.upstream_model or deployment.spec.model_id
        return body

    def _observe(self, usage: Usage) -> None:
        m = self.metrics
        m.requests.labels(usage.endpoint, usage.model_id, usage.status).inc()
        m.latency.labels(usage.endpoint, usage.model_id).observe(usage.latency_s)
        if usage.ttft_s is not None:
            m.ttft.labels(usage.model_id).observe(usage.ttft_s)
        m.tokens.labels(usage.model_id, "prompt").inc(usage.prompt_tokens)
        m.tokens.labels(usage.model_id, "completion").inc(usage.completion_tokens)

    def _finish(self, data: JSON, usage: Usage, obj: str) -> JSON:
        data.pop("timings", None)
        data["id"] = usage.request_id
        data["object"] = obj
        data["model"] = usage.model_id
        data["usage"] = usage.as_openai()
        return data

    # -- chat ----------------------------------------------------------------------------------
    async def _chat_call(self, principal: Principal, model_id: str, body: JSON) -> tuple[Deployment, JSON, Estimate]:
        deployment = self.deployment(model_id, "chat", principal)
        prompt = await self.prompts.chat(deployment.spec, body)
        self.check_context(deployment, [prompt], "messages", "messages")
        max_out = self.max_output(deployment, body.get("max_tokens"), prompt)
        return deployment, {**body, "max_tokens": max_out}, Estimate(prompt.tokens, max_out)

    async def chat(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> JSON:
        deployment, body, est = await self._chat_call(principal, model_id, body)
        call = await self._open(principal, deployment, "chat.completions", "chatcmpl-", est, headers, client_gone)
        try:
            async with deployment.lease(call.hold.org_id, call.client_gone) as engine:
                call.usage.replica = engine.name
                data = await engine.request("/v1/chat/completions", self._prepare(deployment, body))
            call.usage.add(usage_from(data))
            names = _tool_names(body)
            for choice in data.get("choices") or []:
                message = choice.get("message") or {}
                if names and not message.get("tool_calls"):
                    calls = parse_tool_calls(message.get("content"), names)
                    if calls:
                        message["tool_calls"] = calls
                        message["content"] = None
                        choice["finish_reason"] = "tool_calls"
            await self._close(call)
            return self._finish(data, call.usage, "chat.completion")
        except BaseException as exc:
            await self._close(call, _failed(exc))
            raise

    async def chat_stream(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        include_usage: bool,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> AsyncIterator[list[JSON]]:
        deployment, body, est = await self._chat_call(principal, model_id, body)
        call = await self._open(principal, deployment, "chat.completions", "chatcmpl-", est, headers, client_gone)
        return self._stream(call, "/v1/chat/completions", [body], include_usage, _tool_names(body))

    async def _stream(
        self, call: _Call, path: str, bodies: list[JSON], include_usage: bool, tool_names: list[str]
    ) -> AsyncIterator[list[JSON]]:
        """Relay one or more engine streams as one, in the engine's batches (see `Engine.stream`); settle
        before the final usage chunk goes out."""
        created = int(time.time())
        status = "aborted"
        # The first progress record is due one interval into the stream, so a stream that ends sooner (the
        # common short request) writes only its hold and its settlement.
        call.progress_at = call.started + self.progress_interval_s
        try:
            for index, body in enumerate(bodies):
                async for batch in self._relay(call, path, body, tool_names, index, created):
                    yield batch
            status = "ok"
            await self._close(call, status)
            if include_usage:
                # The last thing yielded: the SSE writer sends it with [DONE] and reads no further.
                yield [
                    {
                        "id": call.usage.request_id,
                        "object": chunk_object(path),
                        "created": created,
                        "model": call.usage.model_id,
                        "choices": [],
                        "usage": call.usage.as_openai(),
                    }
                ]
        except BaseException as exc:
            status = _failed(exc)
            raise
        finally:
            await self._close(call, status)

    async def _relay(
        self, call: _Call, path: str, body: JSON, tool_names: list[str], index: int, created: int
    ) -> AsyncIterator[list[JSON]]:
        upstream = self._prepare(call.deployment, body)
        upstream["stream"] = True
        # Always ask the engine for its own count: billing never depends on the client's choice.
        upstream["stream_options"] = {"include_usage": True}
        buffer = ToolStreamBuffer(tool_names) if tool_names else None
        usage = call.usage
        async with call.deployment.lease(call.hold.org_id, call.client_gone) as engine:
            usage.replica = engine.name
            counts_chunks = not engine.speaks_llamacpp  # no running count from this engine: count chunks
            as_is = buffer is None and index == 0  # nothing to hold back or re-index: chunks pass unchanged
            async for batch in engine.stream(path, upstream):
                out = self._relay_batch(call, batch, buffer, index, created, counts_chunks, as_is)
                # Once per batch: a clock read is all a stream pays until a record is due.
                if time.perf_counter() >= call.progress_at:
                    self._record_progress(call)
                if out:
                    yield out

    @staticmethod
    def _relay_batch(
        call: _Call,
        batch: list[JSON],
        buffer: ToolStreamBuffer | None,
        index: int,
        created: int,
        counts_chunks: bool,
        as_is: bool,
    ) -> list[JSON]:
        """Count one batch of engine chunks and make them the client's (ids, model, tool calls)."""
        usage = call.usage
        request_id, model_id = usage.request_id, usage.model_id
        out: list[JSON] = []
        for chunk in batch:
            timings = chunk.pop("timings", None)
            if timings is not None:
                usage.see_timings(timings)
            chunk["id"] = request_id
            chunk["model"] = model_id
            if "created" not in chunk:
                chunk["created"] = created
            if "usage" in chunk:
                usage.add(chunk.pop("usage"))
                if not chunk.get("choices"):
                    continue
            # Only the first output (time to first token) matters, unless chunks are the count.
            if (counts_chunks or usage.ttft_s is None) and any(has_output(c) for c in chunk.get("choices") or ()):
                if usage.ttft_s is None:
                    usage.ttft_s = time.perf_counter() - call.started
                if counts_chunks:
                    usage.live_completion += 1
            if as_is:
                out.append(chunk)
            else:
                out.extend(rewrite(chunk, buffer, index))
        return out

    def _record_progress(self, call: _Call) -> None:
        """Write the tokens generated so far onto the hold, so that a crash of this process before the
        settlement still bills them (BillingService.recover). Fire and forget: the relay never waits for
        the write, and a failed one costs only this record (the next one or the settlement supersedes it)."""
        call.progress_at = time.perf_counter() + self.progress_interval_s
        usage = call.usage
        counts = (
            usage.prompt_tokens + usage.live_prompt,
            usage.completion_tokens + usage.live_completion,
            usage.cached_tokens + usage.live_cached,
        )
        if counts == call.progress:
            return  # nothing new since the last record: a stalled engine costs no writes
        try:
            written = self.billing.record_progress(call.hold, *counts)
        except Exception:  # noqa: BLE001 - a progress record must never break the stream it describes
            log.warning("recording progress of %s failed", usage.request_id, exc_info=True)
            return
        call.progress = counts
        written.add_done_callback(_log_failed_progress)

    # -- completions ---------------------------------------------------------------------------
    async def _completion_call(
        self, principal: Principal, model_id: str, body: JSON, prompts: list[Any]
    ) -> tuple[Deployment, JSON, Estimate]:
        deployment = self.deployment(model_id, "chat", principal)
        counts = await self.prompts.inputs(deployment.spec, prompts)
        self.check_context(deployment, counts, "prompt", "prompt")
        longest = max(counts, key=lambda c: c.tokens)
        max_out = self.max_output(deployment, body.get("max_tokens"), longest)
        est = Estimate(sum(c.tokens for c in counts), max_out * len(prompts))
        return deployment, {**body, "max_tokens": max_out}, est

    async def completions(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        prompts: list[Any],
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> JSON:
        """One engine call per prompt: llama.cpp's own batch answer under-counts usage for lists."""
        deployment, body, est = await self._completion_call(principal, model_id, body, prompts)
        call = await self._open(principal, deployment, "completions", "cmpl-", est, headers, client_gone)
        choices: list[JSON] = []
        try:
            async with deployment.lease(call.hold.org_id, call.client_gone) as engine:
                call.usage.replica = engine.name
                for i, prompt in enumerate(prompts):
                    upstream = self._prepare(deployment, {**body, "prompt": prompt})
                    data = await engine.request("/v1/completions", upstream)
                    call.usage.add(usage_from(data))
                    for choice in data.get("choices") or []:
                        choice["index"] = i
                        choices.append(choice)
            await self._close(call)
            result: JSON = {"created": int(time.time()), "choices": choices, "system_fingerprint": None}
            return self._finish(result, call.usage, "text_completion")
        except BaseException as exc:
            await self._close(call, _failed(exc))
            raise

    async def completions_stream(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        prompts: list[Any],
        include_usage: bool,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> AsyncIterator[list[JSON]]:
        deployment, body, est = await self._completion_call(principal, model_id, body, prompts)
        call = await self._open(principal, deployment, "completions", "cmpl-", est, headers, client_gone)
        return self._stream(call, "/v1/completions", [{**body, "prompt": p} for p in prompts], include_usage, [])

    # -- embeddings ----------------------------------------------------------------------------
    async def embeddings(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        encoding: str,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> JSON:
        deployment = self.deployment(model_id, "embedding", principal)
        inputs = body["input"]
        items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
        counts = await self.prompts.inputs(deployment.spec, items)
        self.check_context(deployment, counts, "input", "input")
        est = Estimate(sum(c.tokens for c in counts), 0)
        call = await self._open(principal, deployment, "embeddings", "embd-", est, headers, client_gone)
        try:
            async with deployment.lease(call.hold.org_id, call.client_gone) as engine:
                call.usage.replica = engine.name
                upstream = self._prepare(deployment, body)
                upstream["encoding_format"] = "float"
                data = await engine.request("/v1/embeddings", upstream)
            call.usage.add(usage_from(data))
            vectors = data.get("data")
            if not isinstance(vectors, list):
                raise EngineFailure("the engine returned no embeddings")
            out = []
            for i, item in enumerate(vectors):
                value: Any = item.get("embedding") or []
                if encoding == "base64":
                    value = base64.b64encode(array("f", value).tobytes()).decode()
                out.append({"object": "embedding", "index": item.get("index", i), "embedding": value})
            await self._close(call)
            usage = call.usage.as_openai()
            return {
                "object": "list",
                "data": out,
                "model": model_id,
                "usage": {
                    "prompt_tokens": usage["prompt_tokens"],
                    "total_tokens": usage["prompt_tokens"],
                    "cost": usage["cost"],
                },
            }
        except BaseException as exc:
            await self._close(call, _failed(exc))
            raise
