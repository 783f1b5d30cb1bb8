"""Anthropic's streaming events, made from the gateway's chat chunks.

A stream is: `message_start`, `ping`, then per content block `content_block_start`, its
`content_block_delta`s (`text_delta`, or `input_json_delta` for a tool_use block's input) and
`content_block_stop`, then `message_delta` (stop_reason, stop_sequence, the usage as billed) and
`message_stop`. Each event is `event: <type>` + `data: <json>`; an error after the stream started is
`event: error` with Anthropic's error body.

The gateway settles the request before its final usage chunk, so `message_delta` carries the engine's
own counts and the cost; `message_start` is sent before any count exists and says 0 input tokens (the
anthropic SDK takes the totals from `message_delta`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from yun.api.anthropic.errors import anthropic_error_body, anthropic_type
from yun.api.anthropic.service import stop_reason, tool_use_id, usage_answer
from yun.api.errors import problem_of
from yun.api.sse import EventStream
from yun.engines import JSON
from yun.errors import YunError

__all__ = ["AnthropicEventStream", "message_events"]


def _frame(event: JSON) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class AnthropicEventStream(EventStream):
    """The SSE writer of api/sse.py (disconnects, one write per batch) with Anthropic's framing."""

    done = b""

    def frame(self, batch: list[JSON]) -> bytes:
        return b"".join([_frame(event) for event in batch])

    def is_last(self, batch: list[JSON]) -> bool:
        return bool(batch) and batch[-1]["type"] == "message_stop"

    def error_event(self, exc: YunError) -> bytes:
        problem = problem_of(exc)
        _, type_ = anthropic_type(problem.status, problem.type)
        return _frame(anthropic_error_body(type_, problem.message))


class _Blocks:
    """Which content block is open, and the events that open, fill and close blocks."""

    def __init__(self) -> None:
        self.count = 0
        self.open: str | None = None
        """"text", "tool_use", or None."""
        self.tools: dict[int, int] = {}
        """Chat tool-call index -> content block index."""
        self.finished: JSON | None = None
        """The choice that carried a finish_reason."""

    def _start(self, block: JSON, out: list[JSON]) -> int:
        self.stop(out)
        self.open = block["type"]
        out.append({"type": "content_block_start", "index": self.count, "content_block": block})
        self.count += 1
        return self.count - 1

    def stop(self, out: list[JSON]) -> None:
        if self.open is not None:
            out.append({"type": "content_block_stop", "index": self.count - 1})
            self.open = None

    def text(self, text: str, out: list[JSON]) -> None:
        if self.open != "text":
            self._start({"type": "text", "text": ""}, out)
        delta = {"type": "text_delta", "text": text}
        out.append({"type": "content_block_delta", "index": self.count - 1, "delta": delta})

    def tool_call(self, call: JSON, out: list[JSON]) -> None:
        fn = call.get("function") or {}
        index = call.get("index", 0)
        block = self.tools.get(index)
        if block is None:
            start: JSON = {"type": "tool_use", "id": tool_use_id(call), "name": fn.get("name"), "input": {}}
            block = self.tools[index] = self._start(start, out)
        arguments = fn.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append({"type": "content_block_delta", "index": block, "delta": delta})

    def chunk(self, chunk: JSON, out: list[JSON]) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self.text(text, out)
            for call in delta.get("tool_calls") or ():
                self.tool_call(call, out)
            if choice.get("finish_reason") is not None:
                self.finished = choice


def _start(chunk: JSON) -> JSON:
    message: JSON = {
        "id": chunk.get("id"),
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": chunk.get("model"),
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return {"type": "message_start", "message": message}


def _end(blocks: _Blocks, usage: JSON, stop_sequences: list[str] | None, out: list[JSON]) -> None:
    blocks.stop(out)
    reason, sequence = stop_reason(blocks.finished or {}, stop_sequences)
    delta = {"stop_reason": reason, "stop_sequence": sequence}
    out.append({"type": "message_delta", "delta": delta, "usage": usage_answer(usage)})
    out.append({"type": "message_stop"})


async def message_events(
    chunks: AsyncIterator[list[JSON]], stop_sequences: list[str] | None
) -> AsyncIterator[list[JSON]]:
    """The events of one message from the gateway's chunks of a chat stream asked with usage. Nothing is
    yielded before the gateway's first batch, so an error before any output (no credit, unknown model)
    is raised at the first `anext` and answered with its HTTP status, as on the chat route."""
    blocks = _Blocks()
    try:
        batch = await anext(chunks, None)
        out: list[JSON] = [_start(batch[0]), {"type": "ping"}] if batch else []
        while batch is not None:
            for chunk in batch:
                if "usage" in chunk and not chunk.get("choices"):
                    # The gateway's last chunk, sent once the request is settled: the message ends here.
                    _end(blocks, chunk["usage"], stop_sequences, out)
                    yield out
                    return
                blocks.chunk(chunk, out)
            if out:
                yield out
                out = []
            batch = await anext(chunks, None)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
