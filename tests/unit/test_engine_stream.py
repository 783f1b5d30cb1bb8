"""The engine client's SSE reader against a real HTTP server that cuts events at awkward places."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from yun.engines import OpenAIHTTPEngine
from yun.errors import EngineFailure


def _event(i: int) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": f"w{i}"}}]}) + b"\n\n"


async def _serve(
    parts: list[bytes], pause_s: float = 0.0, turns: asyncio.Queue[None] | None = None
) -> AsyncIterator[str]:
    """A server whose one streaming answer is `parts`, each written (and flushed) separately.

    With `turns`, it writes the next part only once the client has put a turn in the queue (after it
    received the previous batch): parts arrive separately by construction, not by a delay."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, part in enumerate(parts):
            if turns is not None and i > 0:
                await asyncio.wait_for(turns.get(), timeout=30)
            await response.write(part)
            if pause_s:
                await asyncio.sleep(pause_s)  # only to make splits likelier; nothing depends on it
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _collect(parts: list[bytes], pause_s: float = 0.0) -> list[list[dict[str, object]]]:
    gen = _serve(parts, pause_s)
    url = await anext(gen)
    engine = OpenAIHTTPEngine("test", url)
    try:
        return [batch async for batch in engine.stream("/v1/chat/completions", {"stream": True})]
    finally:
        await engine.aclose()
        await gen.aclose()


def _words(batches: list[list[dict[str, object]]]) -> list[str]:
    return [e["choices"][0]["delta"]["content"] for b in batches for e in b]  # type: ignore[index]


async def test_events_split_mid_line_arrive_whole_and_in_order() -> None:
    body = b"".join(_event(i) for i in range(5)) + b"data: [DONE]\n\n"
    # Cut every 7 bytes, flushed apart: no event may be lost, doubled or parsed half.
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]
    batches = await _collect(parts, pause_s=0.002)
    assert _words(batches) == [f"w{i}" for i in range(5)]
    assert all(batches), "no empty batch is yielded"


async def test_events_sent_together_come_as_one_batch() -> None:
    body = b"".join(_event(i) for i in range(10)) + b"data: [DONE]\n\n"
    batches = await _collect([body])
    assert _words(batches) == [f"w{i}" for i in range(10)]
    assert len(batches) == 1


async def test_events_sent_apart_come_one_by_one() -> None:
    turns: asyncio.Queue[None] = asyncio.Queue()
    gen = _serve([_event(0), _event(1), _event(2), b"data: [DONE]\n\n"], turns=turns)
    url = await anext(gen)
    engine = OpenAIHTTPEngine("test", url)
    batches = []
    try:
        async for batch in engine.stream("/v1/chat/completions", {"stream": True}):
            batches.append(batch)
            turns.put_nowait(None)  # the next event is written only now
    finally:
        await engine.aclose()
        await gen.aclose()
    assert [len(b) for b in batches] == [1, 1, 1]


async def test_nothing_after_done_is_read_and_a_last_line_without_newline_counts() -> None:
    after_done = await _collect([_event(0) + b"data: [DONE]\n\n" + _event(1)])
    assert _words(after_done) == ["w0"]
    no_newline = await _collect([_event(0) + _event(1).rstrip(b"\n")])
    assert _words(no_newline) == ["w0", "w1"]


async def test_comments_and_other_fields_are_skipped() -> None:
    batches = await _collect([b": keep-alive\n\nevent: message\n" + _event(3) + b"data: [DONE]\n\n"])
    assert _words(batches) == ["w3"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"data: {not json\n\n", "malformed event"),
        (b'data: {"error": {"message": "boom"}}\n\n', "failed mid-stream"),
    ],
)
async def test_a_bad_event_fails_the_stream_after_the_good_ones(payload: bytes, message: str) -> None:
    turns: asyncio.Queue[None] = asyncio.Queue()
    gen = _serve([_event(0), payload], turns=turns)
    url = await anext(gen)
    engine = OpenAIHTTPEngine("test", url)
    seen: list[str] = []
    try:
        with pytest.raises(EngineFailure, match=message):
            async for batch in engine.stream("/v1/chat/completions", {"stream": True}):
                seen += _words([batch])
                turns.put_nowait(None)  # the bad event is written only after the good one arrived
    finally:
        await engine.aclose()
        await gen.aclose()
    assert seen == ["w0"]
