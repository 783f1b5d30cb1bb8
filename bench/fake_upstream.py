"""A fast fake OpenAI-compatible upstream: benchmark scaffolding, never a test double.

Run:
    .venv/bin/python bench/fake_upstream.py --port 9100

Serves, over HTTP/1.1 keep-alive on uvloop + httptools (30k+ requests/s on one core):
- POST /v1/chat/completions: a fixed `chat.completion` with usage; with `"stream": true`, 10 content
  chunks, a usage chunk and `data: [DONE]` as server-sent events in a chunked response.
- GET /health and GET /v1/models: 200 (Yun probes an external upstream's /v1/models).

Every answer is pre-rendered bytes, so the upstream costs a few microseconds per request and is never
the bottleneck of a gateway benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

import httptools
import uvloop

MODEL = "fake"
CONTENT_CHUNKS = 10
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: ".encode() + content_type
    return head + f"\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n".encode() + body


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a fixed answer from the fake upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
    }
    return _response("200 OK", b"application/json", json.dumps(body).encode())


def _stream() -> bytes:
    def chunk(choices: list[dict[str, object]], usage: dict[str, int] | None = None) -> bytes:
        event: dict[str, object] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": choices,
        }
        if usage is not None:
            event["usage"] = usage
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    events = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    for i in range(CONTENT_CHUNKS):
        finish = "stop" if i == CONTENT_CHUNKS - 1 else None
        events.append(chunk([{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": finish}]))
    events.append(chunk([], {"prompt_tokens": 12, "completion_tokens": CONTENT_CHUNKS, "total_tokens": 22}))
    events.append(b"data: [DONE]\n\n")
    body = b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events) + b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    )
    return head + body


COMPLETION = _completion()
STREAM = _stream()
MODELS = _response(
    "200 OK",
    b"application/json",
    json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}).encode(),
)
HEALTH = _response("200 OK", b"application/json", b'{"status":"ok"}')
NOT_FOUND = _response("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')


class HttpProtocol(asyncio.Protocol):
    """One connection; httptools calls the on_* methods as bytes arrive (pipelining works too)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_response("400 Bad Request", b"text/plain", b"bad request"))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/chat/completions":
            streamed = _STREAM_TRUE.search(b"".join(self.body)) is not None
            self.transport.write(STREAM if streamed else COMPLETION)
        elif method == b"GET" and path == b"/health":
            self.transport.write(HEALTH)
        elif method == b"GET" and path == b"/v1/models":
            self.transport.write(MODELS)
        else:
            self.transport.write(NOT_FOUND)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, backlog=1024, reuse_address=True)
    print(f"fake upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
