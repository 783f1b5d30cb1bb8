"""The `Engine` seam: one replica of a model that speaks OpenAI's HTTP API, whoever runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

__all__ = ["Engine", "JSON"]

JSON = dict[str, Any]


class Engine(Protocol):
    """A model endpoint that answers OpenAI-shaped requests.

    Implementations translate their own transport errors into `yun.errors` (EngineUnavailable when
    nothing was computed, EngineFailure when the engine failed mid-way, InvalidRequest and
    ContextLengthExceeded when the engine refused the input) so nothing above sees httpx.
    """

    name: str
    """Human-readable identity for logs and metrics (for example `qwen/0` or an upstream URL)."""

    @property
    def speaks_llamacpp(self) -> bool:
        """True when the engine accepts llama.cpp's extensions (`parse_tool_calls`, `/tokenize`)."""
        ...

    async def request(self, path: str, body: JSON) -> JSON:
        """POST `body` to `path` (for example `/v1/chat/completions`) and return the JSON answer."""
        ...

    def stream(self, path: str, body: JSON) -> AsyncIterator[list[JSON]]:
        """POST a streaming request and yield the server-sent events' JSON payloads until `[DONE]`, in
        batches: each batch holds the events that had arrived when the previous one was taken, in order,
        and is never empty. An engine producing tokens one at a time gives batches of one, as soon as each
        arrives; a burst (a fast upstream, a slow client) is relayed with one write instead of one per event.

        Closing the iterator early (client went away) must cancel the engine's work.
        """
        ...

    async def healthy(self) -> bool:
        """Cheap liveness probe; never raises."""
        ...

    async def aclose(self) -> None: ...
