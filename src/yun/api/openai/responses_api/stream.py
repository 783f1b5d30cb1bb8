"""A streamed chat answer as the Responses API's typed events, in the order OpenAI sends them:

    response.created, response.in_progress,
    per text item:  response.output_item.added, response.content_part.added, response.output_text.delta...,
                    response.output_text.done, response.content_part.done, response.output_item.done
    per tool call:  response.output_item.added, response.function_call_arguments.delta...,
                    response.function_call_arguments.done, response.output_item.done
    response.completed (response.incomplete at the output bound; response.failed on an engine error)

Each event is sent as `event: <type>` + `data: <json>`, with a `sequence_number`; no `[DONE]` follows.
The chat stream underneath is the gateway's (held, metered, settled there); its final usage chunk is
what `response.completed` reports.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import orjson

from yun.api.errors import error_body
from yun.api.openai.responses_api.protocol import ResponseCreateRequest
from yun.api.openai.responses_api.translate import (
    function_call_item,
    message_item,
    response_object,
    response_usage,
)
from yun.api.sse import EventStream
from yun.engines import JSON
from yun.errors import YunError

__all__ = ["ResponseEvents", "ResponsesEventStream"]


class ResponsesEventStream(EventStream):
    done = b""

    def frame(self, batch: list[JSON]) -> bytes:
        return b"".join([b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in batch])

    def error_event(self, exc: YunError) -> bytes:
        body = error_body(exc.message, "server_error", exc.param, exc.code)["error"]
        return self.frame([{"type": "error", **body, "sequence_number": 0}])


Store = Callable[[JSON], "Future[bool]"]
"""Queues a response to be stored (in the request path's writer's next batch); None: not stored."""


class _Events:
    """The state of one streamed response: its items so far and the next sequence number."""

    def __init__(self, req: ResponseCreateRequest, store: Store | None) -> None:
        self.req = req
        self.store = store
        self.closing: list[JSON] = []  # the open items' closing events, made when the settlement was queued
        self.final: JSON | None = None  # the final response, made then too
        self.stored: Future[bool] | None = None  # its store, queued then
        self.seq = 0
        self.response_id = ""
        self.model = req.model
        self.created_at = int(time.time())
        self.output: list[JSON] = []
        self.text: JSON | None = None  # the message item being written
        self.call: JSON | None = None  # the function call being written
        self.call_index: Any = None  # its index among the chat answer's tool calls
        self.truncated = False

    def event(self, kind: str, **fields: Any) -> JSON:
        out = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return out

    def response(self, status: str, usage: JSON | None = None, error: JSON | None = None) -> JSON:
        return response_object(
            self.req,
            self.response_id,
            self.model,
            status=status,
            output=list(self.output),
            usage=usage,
            error=error,
            created_at=self.created_at,
        )

    def start(self, chunk: JSON) -> list[JSON]:
        self.response_id = chunk.get("id") or self.response_id
        self.model = chunk.get("model") or self.model
        self.created_at = int(chunk.get("created") or self.created_at)
        opening = self.response("in_progress")
        return [self.event("response.created", response=opening), self.event("response.in_progress", response=opening)]

    def chunk(self, chunk: JSON, out: list[JSON]) -> JSON | None:
        """Events for one chat chunk, appended to `out`; returns the usage when this is the usage chunk."""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text_delta(delta["content"], out)
            for call in delta.get("tool_calls") or ():
                self.call_delta(call, out)
            if choice.get("finish_reason") == "length":
                self.truncated = True
        usage = chunk.get("usage")
        return usage if isinstance(usage, dict) else None

    def text_delta(self, text: str, out: list[JSON]) -> None:
        if self.text is None:
            self.close_call(out)
            self.text = {**message_item("assistant", ""), "status": "in_progress", "content": []}
            index = len(self.output)
            out.append(self.event("response.output_item.added", output_index=index, item=dict(self.text)))
            out.append(self.event("response.content_part.added", **self._at(), part=_part("")))
            self.text["_text"] = []
        self.text["_text"].append(text)
        out.append(self.event("response.output_text.delta", **self._at(), delta=text, logprobs=[]))

    def _at(self) -> JSON:
        assert self.text is not None
        return {"item_id": self.text["id"], "output_index": len(self.output), "content_index": 0}

    def close_text(self, out: list[JSON]) -> None:
        if self.text is None:
            return
        text = "".join(self.text.pop("_text"))
        at = self._at()
        out.append(self.event("response.output_text.done", **at, text=text, logprobs=[]))
        out.append(self.event("response.content_part.done", **at, part=_part(text)))
        item = {**self.text, "status": "incomplete" if self.truncated else "completed", "content": [_part(text)]}
        out.append(self.event("response.output_item.done", output_index=at["output_index"], item=item))
        self.output.append(item)
        self.text = None

    def call_delta(self, call: JSON, out: list[JSON]) -> None:
        fn = call.get("function") or {}
        index = call.get("index", 0)
        if self.call is None or index != self.call_index:
            self.close_text(out)
            self.close_call(out)
            self.call = function_call_item(call.get("id"), fn.get("name") or "", "", "in_progress")
            self.call_index = index
            out.append(self.event("response.output_item.added", output_index=len(self.output), item=dict(self.call)))
        args = fn.get("arguments")
        if args:
            self.call["arguments"] += args
            out.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=self.call["id"],
                    output_index=len(self.output),
                    delta=args,
                )
            )

    def close_call(self, out: list[JSON]) -> None:
        if self.call is None:
            return
        call, index = {**self.call, "status": "completed"}, len(self.output)
        out.append(
            self.event(
                "response.function_call_arguments.done",
                item_id=call["id"],
                output_index=index,
                name=call["name"],
                arguments=call["arguments"],
            )
        )
        out.append(self.event("response.output_item.done", output_index=index, item=call))
        self.output.append(call)
        self.call = None

    def settling(self, usage: JSON | None) -> None:
        """The answer is complete (its settlement queued, not yet committed): close the open items, make
        the final response and queue it to be stored, in the settlement's transaction (one commit)."""
        self.close_text(self.closing)
        self.close_call(self.closing)
        status = "incomplete" if self.truncated else "completed"
        self.final = self.response(status, usage=None if usage is None else response_usage(usage))
        if self.store is not None:
            self.stored = self.store(self.final)


def _part(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponseEvents:
    """One streamed response: `settling` goes to the gateway's chat stream (its relay calls it once the
    settlement is queued), `stream` turns that chat stream's chunks into the response's events."""

    def __init__(
        self,
        req: ResponseCreateRequest,
        store: Store | None,
        written: Callable[[Future[bool]], Awaitable[bool]],
    ) -> None:
        self._state = _Events(req, store)
        self._written = written
        self.settling = self._state.settling

    async def stream(self, chunks: AsyncIterator[list[JSON]]) -> AsyncIterator[list[JSON]]:
        """The events, in batches (one per engine batch). The final response is stored (when asked) before
        its last event is sent. An error before the first chunk is raised (the HTTP status still says
        it); one after is a `response.failed` event."""
        state = self._state
        try:
            first = await anext(chunks, None)  # admission errors raise from here, before any byte is sent
            batch = first or []
            out: list[JSON] = state.start(batch[0]) if batch else state.start({})
            usage: JSON | None = None
            try:
                while True:
                    for chunk in batch:
                        usage = state.chunk(chunk, out) or usage
                    if out:
                        yield out
                        out = []
                    next_batch = await anext(chunks, None)
                    if next_batch is None:
                        break
                    batch = next_batch
            except YunError as exc:
                failed = state.response("failed", error={"code": exc.code or "server_error", "message": exc.message})
                if state.store is not None:
                    await self._written(state.store(failed))
                yield [state.event("response.failed", response=failed)]
                return
            if state.final is None:  # a chat stream that never said it settled: close and store now
                state.settling(usage)
            assert state.final is not None
            if state.stored is not None:
                await self._written(state.stored)  # committed before the client hears it is done
            out += state.closing
            out.append(state.event(f"response.{state.final['status']}", response=state.final))
            yield out
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
