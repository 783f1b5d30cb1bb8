"""Body limits: refuse oversized bodies (413) before anyone parses them, on every route.

Pure ASGI, so streaming responses are untouched. A body with a Content-Length over the limit is refused
from its header. A chunked body has no length up front, so it is read here first, up to the limit, and
handed on whole: whoever parses it later (FastAPI's body parser, an inference route) can never see a
body too large, and so can never turn one into a 400 "error parsing the body" or a 500.

Streamed routes (an upload to /v1/files) have their own, larger limit and are never buffered: their body
passes through as it arrives, counted, and the route's read fails with PayloadTooLarge (a 413 from the
error handlers) the moment the count passes the limit. An early answer on such a route (a 413, a 401, a
400 about the purpose) first reads and drops a bounded part of the rest of the body, so the client, still
writing, gets to read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yun.api.errors import Problem, shape_for
from yun.errors import PayloadTooLarge

__all__ = ["MULTIPART_OVERHEAD", "BodyLimit"]

MULTIPART_OVERHEAD = 1024 * 1024
"""What a streamed upload's body may hold beyond its file: the multipart boundaries, headers and fields."""


class BodyLimit:
    """`max_bytes` on every route but those in `streamed` ((method, path) -> their own limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: Mapping[tuple[str, str], int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streamed = self.streamed.get((scope["method"], scope["path"].rstrip("/")))
        if streamed is not None:
            await _Streamed(self.app, streamed)(scope, receive, send)
            return
        declared: int | None = None
        waits_to_send = False  # `Expect: 100-continue`: the client sends the body only if we ask for it
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server rejects a malformed length before the app runs
            elif name == b"expect":
                waits_to_send = value.lower() == b"100-continue"
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, receive if not waits_to_send else None, send)
            else:
                await self.app(scope, receive, send)  # the server holds the body to its declared length
            return
        try:
            body = await self._read_chunked(receive)
        except _TooLarge:
            await self._refuse(scope, receive, send)
            return
        except ClientDisconnect:
            return  # the client left while sending: nobody to answer, nothing was done
        await self.app(scope, _replay(body, receive), send)

    async def _read_chunked(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge()
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _refuse(self, scope: Scope, receive: Receive | None, send: Send) -> None:
        await _refuse(self.max_bytes, scope, receive, send)


def _message(limit: int) -> str:
    return f"Request body is larger than the limit of {limit} bytes."


async def _refuse(limit: int, scope: Scope, receive: Receive | None, send: Send) -> None:
    """Answer 413 (after draining the body from `receive`, unless None: nothing was sent yet), in the
    error shape of the route that was asked (api/errors.py)."""
    if receive is not None:
        await _drain(receive, min(limit * _DRAIN_FACTOR, _DRAIN_MAX))
    problem = Problem(413, "invalid_request_error", _message(limit), None, "payload_too_large")
    status, error = shape_for(scope["path"])(problem)
    body = json.dumps(error).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


# How much of a refused body is read and dropped before the 413 goes out. HTTP/1.1 clients (httpx, the
# openai SDK, requests) write the whole body before they read the answer: a server that answers and
# closes mid-body resets the connection and the client sees a broken pipe instead of the 413. Past this
# bound the connection is closed anyway, so a client cannot keep a worker busy with an endless upload.
_DRAIN_FACTOR = 4
_DRAIN_MAX = 32 * 1024 * 1024


class _Streamed:
    """One request on a streamed route: its body counted as it passes, never buffered."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.received = 0
        self.done = False
        self.asked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared: int | None = None
        waits_to_send = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
            elif name == b"expect":
                waits_to_send = value.lower() == b"100-continue"
        if declared is not None and declared > self.limit:
            await _refuse(self.limit, scope, receive if not waits_to_send else None, send)
            return

        async def counted() -> Message:
            self.asked = True
            message = await receive()
            if message["type"] != "http.request":
                return message
            self.received += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.received > self.limit:
                raise PayloadTooLarge(_message(self.limit), param="file")
            return message

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and not self.done and (self.asked or not waits_to_send):
                # Answered before the whole body came: read some of the rest so the client sees the answer.
                self.done = True
                await _drain(receive, _DRAIN_MAX)
            await send(message)

        await self.app(scope, counted, answer)


async def _drain(receive: Receive, budget: int) -> None:
    read = 0
    while read <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body as one message, then whatever the server sends next
    (the disconnect a streaming handler waits for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
