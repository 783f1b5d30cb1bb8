"""Responses of the inference endpoints: JSON bodies and server-sent events for streamed completions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from yun.api.errors import error_body
from yun.engines import JSON
from yun.errors import YunError

__all__ = ["EventStream", "FastJSONResponse", "sse_response"]

log = logging.getLogger("yun.api")


class FastJSONResponse(Response):
    """A JSON response rendered by orjson (compact, UTF-8; several times cheaper than the json module)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_DONE = b"data: [DONE]\n\n"


def _event(data: JSON) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _events(batch: list[JSON]) -> bytes:
    return _event(batch[0]) if len(batch) == 1 else b"".join([_event(data) for data in batch])


class EventStream(Response):
    """`text/event-stream` of completion chunks, ending with `data: [DONE]`. Chunks come in batches (the
    engine's, see `Engine.stream`); each batch goes out in one write, as soon as it is there.

    While it streams, a watcher waits for the client to disconnect and then cancels the stream, so the
    engine request is closed (llama.cpp stops generating) and the gateway bills what was generated.
    An error after the stream has started is sent as an error event (the status is already 200).

    How events are framed is OpenAI's here (`frame`, `is_last`, `error_event`, `done`); another API's
    stream (api/anthropic/stream.py) overrides those four and keeps the rest.
    """

    media_type = "text/event-stream"
    done = _DONE
    """Written after the last event (or the error event)."""

    def frame(self, batch: list[JSON]) -> bytes:
        return _events(batch)

    def is_last(self, batch: list[JSON]) -> bool:
        """OpenAI's usage chunk is a stream's last: it goes out in one write with [DONE]."""
        return bool(batch) and "usage" in batch[-1] and not batch[-1].get("choices")

    def error_event(self, exc: YunError) -> bytes:
        return _event(error_body(exc.message, "server_error", exc.param, exc.code))

    def __init__(self, first: list[JSON] | None, chunks: AsyncIterator[list[JSON]], headers: Mapping[str, str]) -> None:
        self._first = first
        self._chunks = chunks
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        me = asyncio.current_task()
        assert me is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            me.cancel()

        watcher = asyncio.ensure_future(watch())
        tail = self.done
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                batch = self._first
                if batch is None:
                    batch = await anext(self._chunks, None)
                while batch is not None:
                    if self.is_last(batch):
                        tail = self.frame(batch) + self.done  # in one write with the end of the stream
                        break
                    await send({"type": "http.response.body", "body": self.frame(batch), "more_body": True})
                    batch = await anext(self._chunks, None)
            except YunError as exc:
                tail = self.error_event(exc) + self.done
            # After the last body message the server reports "disconnect" to receive(): stop watching first.
            watcher.cancel()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except asyncio.CancelledError:
            if gone and me.uncancel() == 0:
                return  # the client left; the gateway settled what the engine generated
            raise
        finally:
            watcher.cancel()
            await self._chunks.aclose()  # type: ignore[attr-defined]


async def sse_response(
    chunks: AsyncIterator[list[JSON]], headers: dict[str, str] | None = None, stream: type[EventStream] = EventStream
) -> EventStream:
    """Start streaming only after the first chunk arrived, so that errors before any output (unknown
    model, prompt too long, no healthy replica) still get a proper HTTP status instead of a 200 stream."""
    first = await anext(chunks, None)
    return stream(first, chunks, headers or {})
