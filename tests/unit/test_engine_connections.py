"""The engine client against a real loopback HTTP server that misbehaves the way llama.cpp's sometimes does:
closing (or resetting) a kept-alive connection as the next request arrives on it.

The server records every request per connection, so each test proves which connection a request travelled
on, and that a retry happened exactly when it is safe for billing (pooled connection, no response yet)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.support.net import free_port
from yun.engines import OpenAIHTTPEngine
from yun.errors import EngineFailure, EngineUnavailable

PROMPT = "a tenant's secret prompt"
CHAT = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {"completion_tokens": 1}}

# What the server does with request number `req` on connection number `conn` (both from 0).
Behaviour = Callable[[int, int], str]


def _event(data: object) -> bytes:
    line = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(line), line)


_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
_CHUNK = {"choices": [{"delta": {"content": "hi"}}]}


@dataclass
class FlakyEngine:
    """A loopback HTTP/1.1 server scripted per (connection, request)."""

    behaviour: Behaviour
    requests: list[list[bytes]] = field(default_factory=list)
    """Request bodies, one list per accepted connection."""
    server: asyncio.Server | None = None
    event_taken: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a test once the client holds the first event, so a reset cannot overtake the event."""

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = len(self.requests)
        self.requests.append([])
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests[conn].append(await reader.readexactly(length))
                if not await self._answer(self.behaviour(conn, len(self.requests[conn]) - 1), reader, writer):
                    return
        finally:
            writer.close()

    async def _answer(self, action: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Act on one request; False when the connection is finished."""
        if action == "json":
            body = json.dumps(ANSWER).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            writer.write(body)
        elif action == "sse":
            # One write, terminator included, so the client reads the end of the body and pools the connection.
            writer.write(_SSE_HEAD + _event(_CHUNK) + _event(b"[DONE]") + b"0\r\n\r\n")
        elif action == "close":
            return False
        elif action == "reset":
            _reset(writer)
            return False
        elif action == "sse_then_reset":
            writer.write(_SSE_HEAD + _event(_CHUNK))
            await writer.drain()
            await self.event_taken.wait()
            _reset(writer)
            return False
        elif action == "partial_json":
            # Then an orderly close: a reset could discard the headers before the client has read them.
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
            await writer.drain()
            return False
        elif action == "hang":
            await reader.read()  # until the client gives up and closes
            return False
        else:
            raise AssertionError(action)
        await writer.drain()
        return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a crashed or impatient server does, instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


Serve = Callable[[Behaviour], Awaitable[FlakyEngine]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> FlakyEngine:
        engine = FlakyEngine(behaviour)
        engine.server = await asyncio.start_server(engine._serve, "127.0.0.1", 0)
        servers.append(engine.server)
        return engine

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _drain(engine: OpenAIHTTPEngine) -> list[dict[str, object]]:
    return [e async for batch in engine.stream("/v1/chat/completions", {**CHAT, "stream": True}) for e in batch]


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_a_pooled_connection_closed_before_the_answer_is_retried_once_on_a_new_one(
    serve: Serve, drop: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first connection answers, then dies as the second request arrives; every later connection answers.
    server = await serve(lambda conn, req: drop if (conn, req) == (0, 1) else "json")
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=5)
    try:
        assert await engine.request("/v1/chat/completions", CHAT) == ANSWER
        with caplog.at_level(logging.INFO, logger="yun.engines"):
            assert await engine.request("/v1/chat/completions", CHAT) == ANSWER
    finally:
        await engine.aclose()
    # The second request went out on the pooled connection, was dropped, and went again on a new one.
    assert [len(r) for r in server.requests] == [2, 1]
    assert "flaky/0" in caplog.text and PROMPT not in caplog.text


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_a_stream_on_a_dropped_pooled_connection_is_retried_before_any_event(serve: Serve, drop: str) -> None:
    server = await serve(lambda conn, req: drop if (conn, req) == (0, 1) else "sse")
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=5)
    try:
        assert await _drain(engine) == [_CHUNK]
        assert await _drain(engine) == [_CHUNK]
    finally:
        await engine.aclose()
    assert [len(r) for r in server.requests] == [2, 1]


async def test_a_stream_that_breaks_after_its_headers_is_a_failure_not_a_retry(
    serve: Serve,
) -> None:
    """Tokens may have been generated and billed from the events already relayed: never send it again."""
    server = await serve(lambda conn, req: "sse_then_reset" if (conn, req) == (0, 1) else "sse")
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=5)
    got: list[object] = []
    try:
        assert await _drain(engine) == [_CHUNK]
        with pytest.raises(EngineFailure, match="dropped the stream"):
            async for batch in engine.stream("/v1/chat/completions", {**CHAT, "stream": True}):
                got += batch
                server.event_taken.set()
    finally:
        await engine.aclose()
    assert got == [_CHUNK]
    assert [len(r) for r in server.requests] == [2]


async def test_a_response_that_breaks_after_its_headers_is_a_failure_not_a_retry(
    serve: Serve,
) -> None:
    server = await serve(lambda conn, req: "partial_json" if (conn, req) == (0, 1) else "json")
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=5)
    try:
        await engine.request("/v1/chat/completions", CHAT)
        with pytest.raises(EngineFailure, match="dropped the request"):
            await engine.request("/v1/chat/completions", CHAT)
    finally:
        await engine.aclose()
    assert [len(r) for r in server.requests] == [2]


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_an_engine_that_keeps_dropping_fails_after_one_retry(serve: Serve, drop: str) -> None:
    server = await serve(lambda conn, req: "json" if (conn, req) == (0, 0) else drop)
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=5)
    try:
        await engine.request("/v1/chat/completions", CHAT)
        with pytest.raises(EngineFailure, match="dropped the request"):
            await engine.request("/v1/chat/completions", CHAT)
        with pytest.raises(EngineFailure, match="dropped the stream"):
            await _drain(engine)
    finally:
        await engine.aclose()
    # The pooled attempt and one retry; then the stream, on a connection of its own, is not retried at all.
    assert [len(r) for r in server.requests] == [2, 1, 1]


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_a_new_connection_dropped_before_the_answer_is_not_retried(serve: Serve, drop: str) -> None:
    """The engine read this request on a connection opened for it and dropped it: sending it again only
    repeats whatever made the engine drop it."""
    server = await serve(lambda conn, req: drop)
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=5)
    try:
        with pytest.raises(EngineFailure):
            await engine.request("/v1/chat/completions", CHAT)
    finally:
        await engine.aclose()
    assert [len(r) for r in server.requests] == [1]


async def test_a_timeout_on_a_pooled_connection_is_not_retried(serve: Serve) -> None:
    server = await serve(lambda conn, req: "hang" if (conn, req) == (0, 1) else "json")
    engine = OpenAIHTTPEngine("flaky/0", server.url, timeout_s=0.5)
    try:
        await engine.request("/v1/chat/completions", CHAT)
        with pytest.raises(EngineFailure, match="timed out"):
            await engine.request("/v1/chat/completions", CHAT)
    finally:
        await engine.aclose()
    assert [len(r) for r in server.requests] == [2]


async def test_an_engine_that_is_down_is_unavailable_without_a_retry(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # a port nobody listens on
    engine = OpenAIHTTPEngine("down/0", f"http://127.0.0.1:{port}", timeout_s=5)
    caplog.set_level(logging.INFO, logger="yun.engines")
    try:
        with pytest.raises(EngineUnavailable):
            await engine.request("/v1/chat/completions", CHAT)
        with pytest.raises(EngineUnavailable):
            await _drain(engine)
    finally:
        await engine.aclose()
    assert "retrying" not in caplog.text
