"""Server-sent events for streamed completions."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from yun.api.errors import error_body
from yun.engines import JSON
from yun.errors import YunError

__all__ = ["sse_response"]

log = logging.getLogger("yun.api")


def _event(data: JSON) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def sse_response(chunks: AsyncIterator[JSON], headers: dict[str, str] | None = None) -> StreamingResponse:
    """Start streaming only after the first chunk arrived, so that errors before any output (unknown
    model, prompt too long, no healthy replica) still get a proper HTTP status instead of a 200 stream."""
    first = await anext(chunks, None)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield _event(first)
            async for chunk in chunks:
                yield _event(chunk)
        except YunError as exc:
            yield _event(error_body(exc.message, "server_error", exc.param, exc.code))
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **(headers or {})}
    )
