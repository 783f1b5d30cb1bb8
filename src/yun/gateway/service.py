"""The request path: authorize the model, count the prompt, hold credit, call a replica, answer.

Each endpoint reads: prepare (deployment, prompt count, context check, output bound) -> `async with
self.holds.open(...)` (gateway/holding.py: admit, hold, settle exactly once) -> call the engine, or
hand a stream to `relay` (gateway/relay.py) -> finish the answer.

Everything here runs on every request, so it does only that; anything slow (statements, rollup
queries, dashboards) reads the settled records later, off this path.
"""

from __future__ import annotations

import asyncio
import base64
import time
from array import array
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from yun.billing import BillingService, Estimate
from yun.cluster import ClientGone, Pool, Router
from yun.engines import JSON
from yun.errors import (
    ContextLengthExceeded,
    EngineFailure,
    EngineUnavailable,
    InvalidRequest,
    PermissionDenied,
    UnsupportedParameter,
)
from yun.gateway.choices import TextChoices, choice_bodies, fan_out
from yun.gateway.holding import Holding, Holds, UsageSink
from yun.gateway.metrics import Metrics
from yun.gateway.prompt import PromptCount, PromptCounts
from yun.gateway.ratelimit import RateLimitStore
from yun.gateway.relay import relay, upstream
from yun.gateway.tools import parse_tool_calls
from yun.gateway.usage import Usage, usage_from
from yun.tenancy import Principal

__all__ = ["Gateway", "UsageSink"]

_DEFAULT_MAX_OUTPUT = 4096  # when neither the client nor the model card bounds the output


async def _call(held: Holding, path: str, request: JSON, share: int = 1) -> JSON:
    """One engine request on a replica slot of the held request's deployment. A replica that fails it
    with nothing computed (no connection, a 503) hands it to another healthy replica, unseen by the client.
    One that accepted it and then dropped it is not retried: the request itself may be what kills engines.
    `share`: how many engine requests the held request makes; each weighs its part in the fair queue."""
    deployment = held.deployment
    cost = max(1, held.estimated_tokens // share)
    while True:
        async with deployment.lease(held.hold.org_id, held.client_gone, cost) as engine:
            held.usage.replica = engine.name
            try:
                return await engine.request(path, request)
            except EngineUnavailable:
                if not deployment.failed_before_output(engine):
                    raise


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
    def __init__(
        self,
        router: Router,
        metrics: Metrics,
        billing: BillingService,
        limiter: RateLimitStore,
        *,
        log_prompts: bool = False,
        progress_interval_s: float = 1.0,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.billing = billing
        """Called only through `holds` (gateway/holding.py), the gateway's one caller of the money path."""
        # Prompts are tenants' data: logged only when an operator turns this on (never in production).
        self.log_prompts = log_prompts
        self.sinks: list[UsageSink] = [self._observe]
        self.holds = Holds(billing, limiter, self.sinks, progress_interval_s)
        """Every request's credit hold: `async with self.holds.open(...) as held:` settles it exactly once."""
        self.prompts = PromptCounts()

    # -- routing and admission -----------------------------------------------------------------
    def deployment(self, model_id: str, kind: str, principal: Principal | None = None) -> Pool:
        deployment = self.router.get(model_id, None if principal is None else principal.org_id)
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

    def max_output(self, deployment: Pool, requested: int | None, prompt: PromptCount) -> int:
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
    def check_context(deployment: Pool, prompts: list[PromptCount], what: str, param: str) -> None:
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

    def _observe(self, usage: Usage) -> None:
        m = self.metrics
        m.requests.labels(usage.endpoint, usage.model_id, usage.status).inc()
        m.latency.labels(usage.endpoint, usage.model_id).observe(usage.latency_s)
        if usage.ttft_s is not None:
            m.ttft.labels(usage.model_id).observe(usage.ttft_s)
        m.tokens.labels(usage.model_id, "prompt").inc(usage.prompt_tokens)
        m.tokens.labels(usage.model_id, "completion").inc(usage.completion_tokens)

    # -- chat ----------------------------------------------------------------------------------
    async def _chat_call(self, principal: Principal, model_id: str, body: JSON) -> tuple[Pool, list[JSON], Estimate]:
        """The deployment, one engine body per choice (`n`, see gateway/choices.py), and the hold's bound."""
        n: int = body.pop("n", 1)
        deployment = self.deployment(model_id, "chat", principal)
        prompt = await self.prompts.chat(deployment.spec, body)
        self.check_context(deployment, [prompt], "messages", "messages")
        max_out = self.max_output(deployment, body.get("max_tokens"), prompt)
        bodies = choice_bodies({**body, "max_tokens": max_out}, n)
        return deployment, bodies, Estimate(prompt.tokens * n, max_out * n)

    async def count_chat(self, principal: Principal, model_id: str, body: JSON) -> int:
        """The prompt tokens of a chat body, counted as the hold counts them (with the model's own tokenizer
        and chat template where there is one) but without the hold's margin for structured content: a
        count to show, not a bound to hold. Runs no engine and holds or bills nothing."""
        deployment = self.deployment(model_id, "chat", principal)
        return (await self.prompts.chat(deployment.spec, body, margin=False)).tokens

    async def chat(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
        endpoint: str = "chat.completions",
        on_answer: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """One chat answer (of `n` choices). `endpoint` names the API it answers on its usage record (`responses`
        for the Responses API, which is a chat underneath) and gives its request id's prefix. `on_answer`
        gets the answer once its settlement is queued and before it is committed: a write it queues to the
        request path's writer (the Responses API's stored response) joins the settlement's transaction, one
        commit where there were two."""
        deployment, bodies, est = await self._chat_call(principal, model_id, body)
        async with self.holds.open(principal, deployment, endpoint, est, headers, client_gone) as held:
            answers = await fan_out(self._caller(held, "/v1/chat/completions", len(bodies)), bodies)
            settled = held.submit_settlement()  # first: the answer's usage carries the cost
            data = answers[0]
            if len(answers) > 1:
                data["choices"] = [{**c, "index": i} for i, a in enumerate(answers) for c in a.get("choices") or ()]
            _parse_tool_calls(data, _tool_names(bodies[0]), bodies[0].get("parallel_tool_calls") is False)
            if bodies[0].get("timings_per_token") is not True:
                data.pop("timings", None)  # llama.cpp's, unless the client asked for them
            _finish(data, held.usage, "chat.completion")
            if on_answer is not None:
                on_answer(data)
            if settled is not None:
                await asyncio.shield(settled)  # a cancelled request still has its settlement written
        return data

    def _caller(self, held: Holding, path: str, share: int) -> Callable[[JSON], Coroutine[Any, Any, JSON]]:
        """One engine call of the held request (one of `share`), its usage folded into the hold."""

        async def call(body: JSON) -> JSON:
            data = await _call(held, path, upstream(held.deployment, body, self.log_prompts), share)
            held.usage.add(usage_from(data))
            return data

        return call

    async def chat_stream(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        include_usage: bool,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
        endpoint: str = "chat.completions",
        on_settle: Callable[[JSON], None] | None = None,
    ) -> AsyncIterator[list[JSON]]:
        """The answer's chunks, in batches; the hold is opened (and refused) at the first `anext`.
        `on_settle`: see `relay`."""
        deployment, bodies, est = await self._chat_call(principal, model_id, body)
        held = self.holds.open(principal, deployment, endpoint, est, headers, client_gone)
        tools = _tool_names(bodies[0])
        return relay(held, "/v1/chat/completions", bodies, include_usage, tools, self.log_prompts, on_settle=on_settle)

    # -- completions ---------------------------------------------------------------------------
    async def _completion_call(
        self, principal: Principal, model_id: str, body: JSON, prompts: list[Any]
    ) -> tuple[Pool, list[JSON], Estimate, TextChoices | None]:
        """The deployment, one engine body per choice (prompt i's j-th of n is choice i*n + j, as OpenAI
        orders them), the hold's bound, and how to shape the choices (None: as the engine gives them)."""
        n: int = body.pop("n", 1)
        deployment = self.deployment(model_id, "chat", principal)
        shape = await self._text_choices(deployment, body, prompts, n)
        counts = await self.prompts.inputs(deployment.spec, prompts)
        self.check_context(deployment, counts, "prompt", "prompt")
        longest = max(counts, key=lambda c: c.tokens)
        max_out = self.max_output(deployment, body.get("max_tokens"), longest)
        est = Estimate(sum(c.tokens for c in counts) * n, max_out * len(prompts) * n)
        body["max_tokens"] = max_out
        bodies = [{**b, "prompt": p} for p in prompts for b in choice_bodies(body, n)]
        return deployment, bodies, est, shape

    async def completions(
        self,
        principal: Principal,
        model_id: str,
        body: JSON,
        prompts: list[Any],
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> JSON:
        """One engine call per prompt and choice: llama.cpp's own batch answer under-counts usage for lists."""
        deployment, bodies, est, shape = await self._completion_call(principal, model_id, body, prompts)
        async with self.holds.open(principal, deployment, "completions", est, headers, client_gone) as held:
            answers = await fan_out(self._caller(held, "/v1/completions", len(bodies)), bodies)
        choices: list[JSON] = []
        for i, data in enumerate(answers):
            for choice in data.get("choices") or []:
                choice["index"] = i
                if shape is not None:
                    shape.choice(choice)
                choices.append(choice)
        first = answers[0]
        result: JSON = {
            "created": first.get("created") or int(time.time()),
            "choices": choices,
            "system_fingerprint": first.get("system_fingerprint"),
        }
        return _finish(result, held.usage, "text_completion")

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
        """The answers' chunks, in batches; the hold is opened (and refused) at the first `anext`."""
        deployment, bodies, est, shape = await self._completion_call(principal, model_id, body, prompts)
        held = self.holds.open(principal, deployment, "completions", est, headers, client_gone)
        return relay(held, "/v1/completions", bodies, include_usage, [], self.log_prompts, shape)

    async def _text_choices(self, deployment: Pool, body: JSON, prompts: list[Any], n: int) -> TextChoices | None:
        """How a text completion's choices are shaped (see TextChoices); echo is done here for llama.cpp,
        which does not echo, and left to an external upstream, which may. A prompt given as token ids is
        echoed as the model's own vocabulary spells them (as llama.cpp's `/detokenize` would)."""
        echo: list[str] | None = None
        if body.get("echo") and deployment.llamacpp:
            del body["echo"]
            if body.get("logprobs") is not None:
                raise UnsupportedParameter(
                    "echo with logprobs needs the log probabilities of the prompt's tokens, which this model's "
                    "engine (llama.cpp) does not compute; echo without logprobs, or logprobs without echo, work",
                    param="echo",
                )
            texts = [p if isinstance(p, str) else await self._prompt_text(deployment, p) for p in prompts]
            echo = [t for t in texts for _ in range(n)]
        if echo is None and body.get("logprobs") is None:
            return None
        return TextChoices(echo)

    async def _prompt_text(self, deployment: Pool, ids: list[int]) -> str:
        try:
            text = await self.prompts.detokenize(deployment.spec, ids)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="prompt") from None
        if text is None:
            raise UnsupportedParameter(
                "echo of a prompt given as token ids needs this model's vocabulary, which the gateway cannot "
                "read; give the prompt as text",
                param="echo",
            )
        return text

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
        async with self.holds.open(principal, deployment, "embeddings", est, headers, client_gone) as held:
            request = upstream(deployment, body, self.log_prompts)
            request["encoding_format"] = "float"
            data = await _call(held, "/v1/embeddings", request)
            held.usage.add(usage_from(data))
            vectors = data.get("data")
            if not isinstance(vectors, list):
                raise EngineFailure("the engine returned no embeddings")
            out = []
            for i, item in enumerate(vectors):
                value: Any = item.get("embedding") or []
                if encoding == "base64":
                    value = base64.b64encode(array("f", value).tobytes()).decode()
                out.append({"object": "embedding", "index": item.get("index", i), "embedding": value})
        usage = held.usage.as_openai()
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


def _parse_tool_calls(data: JSON, names: list[str], single: bool) -> None:
    """Tool calls the model wrote as text become `tool_calls` (llama.cpp's own parsing misses some)."""
    if not names:
        return
    for choice in data.get("choices") or []:
        message = choice.get("message") or {}
        if not message.get("tool_calls"):
            calls = parse_tool_calls(message.get("content"), names, single)
            if calls:
                message["tool_calls"] = calls
                message["content"] = None
                choice["finish_reason"] = "tool_calls"


def _finish(data: JSON, usage: Usage, obj: str) -> JSON:
    data["id"] = usage.request_id
    data["object"] = obj
    data["model"] = usage.model_id
    data["usage"] = usage.as_openai()
    return data
