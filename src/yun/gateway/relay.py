"""Relaying engine streams to the client: one request's batches of chunks, counted, rewritten (ids, model
name, tool-call holding, re-indexing), its progress recorded on its hold, settled before the last chunk.

Everything in `_relay_batch` runs once per engine chunk, the gateway's hottest code: keep it lean.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from yun.cluster import Pool
from yun.errors import EngineUnavailable
from yun.gateway.choices import TextChoices
from yun.gateway.holding import Holding
from yun.gateway.tools import ToolStreamBuffer
from yun.gateway.usage import Live

__all__ = ["chunk_object", "has_output", "relay", "rewrite", "upstream"]

log = logging.getLogger("yun.gateway")

JSON = dict[str, Any]


def upstream(deployment: Pool, body: JSON, log_prompts: bool) -> JSON:
    """The body the engine gets: the client's, for the deployment's upstream model name."""
    if log_prompts:
        log.info("request to %s: %s", deployment.spec.model_id, json.dumps(body, ensure_ascii=False)[:8000])
    body = dict(body)
    body["model"] = deployment.spec.upstream_model or deployment.spec.model_id
    return body


async def relay(
    held: Holding,
    path: str,
    bodies: list[JSON],
    include_usage: bool,
    tool_names: list[str],
    log_prompts: bool,
    shape: TextChoices | None = None,
    on_settle: Callable[[JSON], None] | None = None,
) -> AsyncIterator[list[JSON]]:
    """Hold credit for one streamed request, relay one or more engine streams as one, in the engine's
    batches (see `Engine.stream`), and settle before the final usage chunk goes out. Body i's choices
    are choice i (several prompts, or `n` choices); `shape` reshapes text choices. Several bodies stream
    at once, their chunks interleaved as they come (see `_merged`). `on_settle` gets the usage (with its
    cost) once the settlement is queued, before it is committed: a write it queues (the Responses API's
    stored response) joins the settlement's transaction.

    The hold is opened at the first step (`anext`), so admission errors surface there, before any
    byte of the response (see `sse_response`), and a stream nobody starts holds nothing.
    """
    created = int(time.time())
    async with held:
        held.start_progress()
        share = len(bodies)
        streams = [
            _relay_one(held, path, body, tool_names, index, created, log_prompts, shape, share)
            for index, body in enumerate(bodies)
        ]
        # Closed before the hold settles (client gone, an error): no engine stream outlives its bill.
        async with aclosing(streams[0] if share == 1 else _merged(streams)) as batches:
            async for batch in batches:
                yield batch
        settled = held.submit_settlement("ok")
        if on_settle is not None:
            on_settle(held.usage.as_openai())
        if settled is not None:
            await asyncio.shield(settled)  # a cancelled stream still has its settlement written
        if include_usage:
            usage = held.usage
            # The last thing yielded: the SSE writer sends it with [DONE] and reads no further.
            yield [
                {
                    "id": usage.request_id,
                    "object": chunk_object(path),
                    "created": created,
                    "model": usage.model_id,
                    "choices": [],
                    "usage": usage.as_openai(),
                }
            ]


async def _merged(streams: list[AsyncGenerator[list[JSON]]]) -> AsyncGenerator[list[JSON]]:
    """The streams' batches as they arrive, each stream's in its own order: `n` choices are generated at
    once and reach the client interleaved, each chunk naming its choice's index, as OpenAI sends them
    (one after the other, every choice but the first would wait for the whole answer before it). The
    first stream to fail cancels the others and its error is raised; closing this cancels them all."""
    done = object()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump(stream: AsyncIterator[list[JSON]]) -> None:
        try:
            async for batch in stream:
                queue.put_nowait(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait(exc)
        else:
            queue.put_nowait(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()  # each leaves its engine stream, which closes the connection: the engine stops
        await asyncio.gather(*tasks, return_exceptions=True)


async def _relay_one(
    held: Holding,
    path: str,
    body: JSON,
    tool_names: list[str],
    index: int,
    created: int,
    log_prompts: bool,
    shape: TextChoices | None,
    share: int = 1,
) -> AsyncGenerator[list[JSON]]:
    deployment = held.deployment
    request = upstream(deployment, body, log_prompts)
    request["stream"] = True
    # Always ask the engine for its own count: billing never depends on the client's choice.
    request["stream_options"] = {"include_usage": True}
    buffer = ToolStreamBuffer(tool_names, body.get("parallel_tool_calls") is False) if tool_names else None
    live = held.usage.stream()
    cost = max(1, held.estimated_tokens // share)  # each of `share` streams weighs its part in the fair queue
    while True:
        async with deployment.lease(held.hold.org_id, held.client_gone, cost) as engine:
            held.usage.replica = engine.name
            counts_chunks = not engine.speaks_llamacpp  # no running count from this engine: count chunks
            # Nothing to hold back, re-index or reshape: chunks pass unchanged.
            as_is = buffer is None and index == 0 and shape is None
            keep_timings = body.get("timings_per_token") is True  # the client asked for llama.cpp's timings
            started = False
            try:
                async for batch in engine.stream(path, request):
                    started = True
                    out = _relay_batch(
                        held, live, batch, buffer, index, created, counts_chunks, as_is, shape, keep_timings
                    )
                    # Once per batch: a clock read is all a stream pays until a record is due.
                    if time.perf_counter() >= held.progress_at:
                        held.record_progress()
                    if out:
                        yield out
                return
            except EngineUnavailable:
                # Nothing reached the engine's output yet: another replica takes it, unseen by the client.
                if started or not deployment.failed_before_output(engine):
                    raise


def _relay_batch(
    held: Holding,
    live: Live,
    batch: list[JSON],
    buffer: ToolStreamBuffer | None,
    index: int,
    created: int,
    counts_chunks: bool,
    as_is: bool,
    shape: TextChoices | None,
    keep_timings: bool,
) -> list[JSON]:
    """Count one batch of engine chunks (`live`: the running count of their stream) and make them the
    client's (ids, model, tool calls)."""
    usage = held.usage
    request_id, model_id = usage.request_id, usage.model_id
    out: list[JSON] = []
    for chunk in batch:
        timings = chunk.get("timings") if keep_timings else chunk.pop("timings", None)
        if timings is not None:
            usage.see_timings(timings, live)
        chunk["id"] = request_id
        chunk["model"] = model_id
        if "created" not in chunk:
            chunk["created"] = created
        if "usage" in chunk:
            usage.add(chunk.pop("usage"), live)
            if not chunk.get("choices"):
                continue
        # Only the first output (time to first token) matters, unless chunks are the count.
        if (counts_chunks or usage.ttft_s is None) and any(has_output(c) for c in chunk.get("choices") or ()):
            if usage.ttft_s is None:
                usage.ttft_s = time.perf_counter() - held.started
            if counts_chunks:
                live.completion += 1
        if as_is:
            out.append(chunk)
        else:
            out.extend(rewrite(chunk, buffer, index, shape))
    return out


def chunk_object(path: str) -> str:
    return "chat.completion.chunk" if path.endswith("chat/completions") else "text_completion"


def has_output(choice: JSON) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))
    return bool(choice.get("text"))


def rewrite(
    chunk: JSON, buffer: ToolStreamBuffer | None, index_offset: int, shape: TextChoices | None = None
) -> list[JSON]:
    """Apply tool-call holding, choice re-indexing and text reshaping to one engine chunk; may give 0-3
    chunks."""
    choices = chunk.get("choices") or []
    if index_offset:
        for c in choices:
            c["index"] = c.get("index", 0) + index_offset
    if shape is not None:
        for c in choices:
            shape.choice(c)
    if buffer is None or not choices:
        return [chunk]
    choice = choices[0]
    at = choice.get("index", 0)
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
        out.append({**base, "choices": [{"index": at, "delta": {"tool_calls": tool_deltas}, "finish_reason": None}]})
        choice["finish_reason"] = "tool_calls"
        delta.pop("content", None)
    elif rest:
        out.append({**base, "choices": [{"index": at, "delta": {"content": rest}, "finish_reason": None}]})
    out.append(chunk)
    return out
