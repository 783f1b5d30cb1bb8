"""The translation of a chat stream into Responses events, for what the tiny model cannot be made to do
on demand: an engine that fails mid-answer, text followed by a tool call, and a client that leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

import pytest

from yun.api.openai.responses_api.protocol import ResponseCreateRequest
from yun.api.openai.responses_api.stream import ResponseEvents, ResponsesEventStream
from yun.errors import EngineFailure

REQ = ResponseCreateRequest.model_validate({"model": "m", "input": "hi"})


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "resp_x",
        "model": "m",
        "created": 1,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class Chunks:
    """A chat stream; with `settle`, as the gateway's relay: the usage given to `settle` (its settlement
    queued) before the last batch, the usage chunk, is returned."""

    def __init__(
        self,
        batches: list[list[dict[str, Any]]],
        fail_after: int | None = None,
        settle: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.batches = batches
        self.fail_after = fail_after
        self.settle = settle
        self.closed = False

    def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        return self

    async def __anext__(self) -> list[dict[str, Any]]:
        if self.fail_after is not None and self.fail_after == 0:
            raise EngineFailure("the engine died")
        if not self.batches:
            raise StopAsyncIteration
        if self.fail_after is not None:
            self.fail_after -= 1
        if self.settle is not None and len(self.batches) == 1:
            self.settle(self.batches[0][-1].get("usage"))
        return self.batches.pop(0)

    async def aclose(self) -> None:
        self.closed = True


def _storing(stored: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Future[bool]]:
    """A store that keeps each response in `stored`, written at once."""

    def store(response: dict[str, Any]) -> Future[bool]:
        stored.append(response)
        done: Future[bool] = Future()
        done.set_result(True)
        return done

    return store


async def _run(chunks: Chunks, *, settles: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stored: list[dict[str, Any]] = []
    response = ResponseEvents(REQ, _storing(stored), asyncio.wrap_future)
    if settles:
        chunks.settle = response.settling
    events = [e async for batch in response.stream(chunks) for e in batch]
    return events, stored


@pytest.mark.parametrize("settles", [False, True], ids=["stored-at-the-end", "stored-with-the-settlement"])
async def test_text_then_tool_call_are_two_items_in_order(settles: bool) -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}
    more = {"index": 0, "function": {"arguments": "1}"}}
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": 0.0}
    chunks = Chunks(
        [
            [_chunk({"role": "assistant", "content": "Let me"}), _chunk({"content": " check."})],
            [_chunk({"tool_calls": [call]}), _chunk({"tool_calls": [more]}, "tool_calls")],
            [{"id": "resp_x", "model": "m", "choices": [], "usage": usage}],
        ]
    )
    events, stored = await _run(chunks, settles=settles)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Let me check."
    assert final["output"][1]["arguments"] == '{"a":1}' and final["output"][1]["call_id"] == "call_1"
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1]
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["output_tokens"] == 4
    assert stored == [final] and chunks.closed


async def test_the_response_is_stored_when_the_settlement_is_queued_before_the_usage_chunk() -> None:
    # The relay queues the settlement, then the gateway's hook queues the stored response (one commit for
    # both), then the usage chunk goes out: by then the response is built and queued.
    usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3, "cost": 0.5}
    stored_when_usage_sent: list[int] = []
    chunks = Chunks(
        [[_chunk({"content": "a"}, "stop")], [{"id": "resp_x", "model": "m", "choices": [], "usage": usage}]]
    )
    response_stored: list[dict[str, Any]] = []
    response = ResponseEvents(REQ, _storing(response_stored), asyncio.wrap_future)

    def settle(u: dict[str, Any] | None) -> None:
        response.settling(u)
        stored_when_usage_sent.append(len(response_stored))

    chunks.settle = settle
    events = [e async for batch in response.stream(chunks) for e in batch]
    assert stored_when_usage_sent == [1]
    assert events[-1]["type"] == "response.completed" and response_stored == [events[-1]["response"]]
    assert events[-1]["response"]["usage"]["cost"] == 0.5
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_engine_failure_after_the_start_is_a_failed_response() -> None:
    chunks = Chunks([[_chunk({"content": "Hel"})], [_chunk({"content": "lo"})]], fail_after=1)
    events, stored = await _run(chunks)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "engine_error", "message": "the engine died"}
    assert stored == [failed] and chunks.closed


async def test_failure_before_the_first_chunk_is_raised_for_the_http_status() -> None:
    chunks = Chunks([], fail_after=0)
    with pytest.raises(EngineFailure):
        await _run(chunks)
    assert chunks.closed


async def test_output_bound_is_an_incomplete_response() -> None:
    chunks = Chunks([[_chunk({"content": "a"}, "length")]])
    events, _ = await _run(chunks)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"


def test_events_are_named_on_the_wire() -> None:
    stream = ResponsesEventStream(None, Chunks([]), {})
    wire = stream.frame([{"type": "response.created", "sequence_number": 0}])
    assert wire == b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    assert stream.done == b""
