"""Engine adapter for anything that speaks OpenAI's HTTP API: xllamacpp replicas, vLLM, SGLang,
llama-server or a hosted provider. Transport errors are translated here and nowhere else.

aiohttp rather than httpx: this client sits on every request's path, and aiohttp's C-accelerated
HTTP parser costs a fraction of httpx's CPU per request (measured with bench/gateway_overhead.py).
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace

from yun.engines.base import JSON
from yun.engines.forced_tools import force_tool_call
from yun.engines.urls import split_credentials
from yun.errors import (
    ContextLengthExceeded,
    EngineFailure,
    EngineUnavailable,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
)

__all__ = ["OpenAIHTTPEngine"]

log = logging.getLogger("yun.engines")

# How many times the current task started opening an engine connection. A request that failed while
# this stayed put ran on a pooled, kept-alive connection. A ContextVar because aiohttp opens the
# connection inside the awaiting task, and the per-task count needs no lock and no per-request object.
_opening_attempts: ContextVar[int] = ContextVar("yun_engine_opening_attempts", default=0)

# What a kept-alive connection the engine already closed fails with before any response arrives: EOF
# (ServerDisconnectedError), a reset (ClientOSError), or a write to a closing transport (ConnectionResetError;
# aiohttp >= 3.10.6 raises its ClientConnectionResetError subclass). Connect errors are ClientOSErrors too;
# they never qualify because opening a connection moves `_opening_attempts`.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError)

_CONTEXT_MARKERS = (
    "exceed_context_size",
    "context length",
    "context_length",
    "maximum context",
    "too large to process",  # llama.cpp, embedding input longer than the batch
)


def _error_message(status: int, raw: bytes) -> tuple[str, str]:
    try:
        err: Any = json.loads(raw).get("error", {})
    except (ValueError, AttributeError):
        return raw[:500].decode(errors="replace"), ""
    if isinstance(err, dict):
        return str(err.get("message", "")), f"{err.get('type', '')} {err.get('code', '')}"
    return str(err), ""


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I)


def _scrub(message: str, secrets: tuple[str, ...]) -> str:
    """The upstream's message without its address or credentials: tenants never see where a model is
    served from, nor the key Yun uses there (issue 10, item 14)."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    return _URL.sub("[url]", message)[:1000]


def _retry_after_s(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); infinity if absent or unreadable."""
    if not value:
        return math.inf
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return math.inf
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _stop_reason(answer: JSON) -> None:
    """llama.cpp's `__verbose` (on the last chunk) tells a stop sequence from the end of the model's turn,
    which its `finish_reason` ("stop" for both) does not. It becomes the finished choice's `stop_reason`,
    as vLLM reports it: the stop sequence that ended the output, or null. The rest of it (the rendered
    prompt, settings) is dropped here: nothing above the engine sees it, nothing logs it."""
    verbose = answer.pop("__verbose")
    word = verbose.get("stopping_word") if isinstance(verbose, dict) and verbose.get("stop_type") == "word" else None
    for choice in answer.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason") is not None:
            choice["stop_reason"] = word or None


def _raise_for(status: int, raw: bytes, name: str, headers: Mapping[str, str], secrets: tuple[str, ...] = ()) -> None:
    """Translate an error answer into the domain error of the same class: what the upstream refused as the
    client's fault stays the client's (4xx, with the upstream's own message, scrubbed); what failed on
    its side is a server error here (502 for a failure, 503 for an outage)."""
    if status < 400:
        return
    message, kind = _error_message(status, raw)
    message = _scrub(message, secrets)
    lowered = f"{message} {kind}".lower()
    if any(m in lowered for m in _CONTEXT_MARKERS):
        if "too large to process" in lowered:
            # llama.cpp's "increase the physical batch size" is advice for its operator, not for the client.
            message = "The input is longer than this model's maximum context length; please shorten it."
        raise ContextLengthExceeded(message or "the input is longer than the model's context")
    if status == 429:
        retry_after = headers.get("Retry-After")
        extra = {"Retry-After": retry_after} if retry_after and _retry_after_s(retry_after) < math.inf else {}
        raise RateLimited(
            message or f"the upstream server of {name} is rate limiting requests; retry later",
            retry_after_s=_retry_after_s(retry_after),
            headers=extra,
        )
    if status in (401, 403):
        # The credentials are Yun's (the operator's upstream key), not the client's: the client's key was
        # accepted. Still refused, as the upstream said, but never as "your API key is wrong".
        raise PermissionDenied(f"the upstream server of {name} refused the request ({status}): {message}")
    if status == 404:
        raise NotFound(message or f"the upstream server of {name} has no such model or endpoint")
    if status == 413:
        raise PayloadTooLarge(message or "the request is too large for the upstream server")
    if status < 500:
        raise InvalidRequest(message or "the engine refused the request")
    if status in (502, 503, 504):
        raise EngineUnavailable(f"engine {name} is unavailable ({status})")
    raise EngineFailure(f"engine {name} failed with HTTP {status}: {message[:200]}")


_IN_FLIGHT_GAUGES = (
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
)


def requests_in_flight(metrics: str) -> int | None:
    """The sum of the in-flight gauges in a Prometheus text exposition; None if it has none of them."""
    total, seen = 0.0, False
    for line in metrics.splitlines():
        name, _, rest = line.partition(" ")
        if name.split("{", 1)[0] in _IN_FLIGHT_GAUGES:
            try:
                total += float(rest.split()[0])
            except (IndexError, ValueError):
                return None
            seen = True
    return int(total) if seen else None


class _CountingConnector(aiohttp.TCPConnector):
    """A TCPConnector that counts, per task, the connections it starts to open.

    `_create_connection` is BaseConnector's hook for subclasses and runs only for new connections,
    so a request on a pooled connection costs nothing extra. Counted before opening: a connect error
    must never look like a pooled connection.
    """

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        _opening_attempts.set(_opening_attempts.get() + 1)
        return await super()._create_connection(req, traces, timeout)


class OpenAIHTTPEngine:
    """One replica reached over HTTP. `base_url` is the part before `/v1/...`.

    The session is created lazily inside the running event loop and reused for every request
    (keep-alive connections); `aclose()` releases it. A second session without keep-alive is made on
    first need, for the one retry of a request whose pooled connection the engine had closed.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        llamacpp: bool = False,
        timeout_s: float = 600.0,
        max_connections: int = 256,
        keep_alive: bool = True,
        lora: tuple[tuple[int, float], ...] | None = None,
    ) -> None:
        self.name = name
        # A fine-tuned model on its base's llama.cpp replica: every request sets each adapter's scale
        # (llama.cpp's `lora`; one not listed would keep its default, and an empty list means defaults).
        self._lora = None if lora is None else [{"id": i, "scale": s} for i, s in lora]
        self._keep_alive = keep_alive
        self._llamacpp = llamacpp
        # Both forms an operator may give work: `http://host:port` and `http://host:port/v1` (as the
        # openai client takes it); paths here start at `/v1/...`. Credentials in the URL
        # (`http://user:pass@host`) are sent as HTTP basic auth, unless an API key is given, which wins:
        # one Authorization header only, and never part of the address this engine keeps or prints.
        bare, credentials = split_credentials(base_url.rstrip("/"))
        auth: str | None = f"Bearer {api_key}" if api_key else None
        if credentials is not None and auth is None:
            auth = "Basic " + base64.b64encode(":".join(credentials).encode()).decode("ascii")
        self.base_url = bare.rstrip("/").removesuffix("/v1")
        # What an upstream's error message must not pass on to tenants (see `_scrub`).
        given = urlsplit(base_url)
        password = credentials[1] if credentials else None  # unquoted, and as given (quoted) below
        self._secrets = tuple(s for s in (api_key, password, given.password, base_url, given.netloc) if s)
        self._headers = {"Authorization": auth} if auth else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=5.0)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None

    @property
    def speaks_llamacpp(self) -> bool:
        return self._llamacpp

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Idle connections are dropped before the server would drop them (llama.cpp and most servers
            # close after 5 s); a connection the server closes anyway is retried once by `_post`.
            reuse: dict[str, Any] = {"keepalive_timeout": 2.0} if self._keep_alive else {"force_close": True}
            self._session = self._new_session(_CountingConnector, **reuse)
        return self._session

    def _fresh_client(self) -> aiohttp.ClientSession:
        if self._fresh_session is None or self._fresh_session.closed:
            # force_close: every request opens its own connection, so a retry never meets a pooled one.
            self._fresh_session = self._new_session(aiohttp.TCPConnector, force_close=True)
        return self._fresh_session

    def _new_session(self, connector: type[aiohttp.TCPConnector], **reuse: Any) -> aiohttp.ClientSession:
        n = self._max_connections
        return aiohttp.ClientSession(
            headers=self._headers,
            timeout=self._timeout,
            connector=connector(limit=n, limit_per_host=n, **reuse),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            trust_env=False,
        )

    def _adapt(self, body: JSON, stream: bool = False) -> JSON:
        if not self._llamacpp:
            return body
        if self._lora is not None:
            body = {**body, "lora": self._lora}
        if body.get("tools"):
            # llama.cpp's own tool-call parser drops characters of Qwen2.5's calls; the gateway parses them.
            # Without it llama.cpp does not force a call for tool_choice "required"/named: a schema does.
            body = {**force_tool_call(body), "parse_tool_calls": False}
        if body.get("stop"):
            # Only llama.cpp's `__verbose` says whether a stop sequence (and which) ended the output; see
            # `_stop_reason`. Asked for only with stop sequences: it repeats the whole prompt.
            body = {**body, "verbose": True}
        if stream:
            # Every chunk then carries the engine's running token counts, so a stream cut short by the
            # client is billed by the engine's own count of what it generated.
            body = {**body, "timings_per_token": True}
        return body

    async def _post(self, path: str, body: JSON) -> aiohttp.ClientResponse:
        """POST `body` and return once the engine's status line and headers have arrived.

        Retried once, on a new connection, only when a pooled connection fails before any response:
        the engine closed it while it sat idle (llama.cpp sometimes does right after a stream), so it
        never answered this request and nothing it did for it can be billed; billing counts only usage
        the engine reports back. Never after headers (a broken stream may have generated tokens), never
        on a timeout, never when this attempt opened the connection itself (the engine took the request
        and dropped it: doing that twice only doubles the harm).
        """
        url = self.base_url + path
        attempts = _opening_attempts.get()
        try:
            return await self._client().post(url, json=body)
        except _STALE_CONNECTION:
            if _opening_attempts.get() != attempts:
                raise
        # The prompt is a tenant's data: the log names the engine only.
        log.info("engine %s closed a kept-alive connection before answering; retrying once", self.name)
        return await self._fresh_client().post(url, json=body)

    async def request(self, path: str, body: JSON) -> JSON:
        body = self._adapt(body)
        try:
            async with await self._post(path, body) as response:
                raw = await response.read()
                status = response.status
                headers = response.headers
        except TimeoutError as exc:
            raise EngineFailure(f"engine {self.name} timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise EngineUnavailable(f"engine {self.name} is unreachable") from exc
        except aiohttp.ClientError as exc:
            raise EngineFailure(f"engine {self.name} dropped the request") from exc
        _raise_for(status, raw, self.name, headers, self._secrets)
        try:
            data: JSON = orjson.loads(raw)
        except ValueError as exc:
            raise EngineFailure(f"engine {self.name} returned invalid JSON") from exc
        if isinstance(data, dict) and "__verbose" in data:
            _stop_reason(data)
        return data

    async def stream(self, path: str, body: JSON) -> AsyncIterator[list[JSON]]:
        body = self._adapt(body, stream=True)
        try:
            async with await self._post(path, body) as response:
                if response.status >= 400:
                    _raise_for(response.status, await response.read(), self.name, response.headers, self._secrets)
                rest = b""
                # Whatever bytes have arrived, at once: a batch per read, not an await per line.
                async for data in response.content.iter_any():
                    lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
                    rest = lines.pop()  # the part after the last newline: an unfinished line, or b""
                    batch, done = self._events(lines)
                    if batch:
                        yield batch
                    if done:
                        return
                if rest:  # the body ended without a final newline
                    batch, _ = self._events([rest])
                    if batch:
                        yield batch
        # Leaving the `async with` early closes the connection, which is how llama.cpp learns to stop.
        except TimeoutError as exc:
            raise EngineFailure(f"engine {self.name} timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise EngineUnavailable(f"engine {self.name} is unreachable") from exc
        except aiohttp.ClientError as exc:
            raise EngineFailure(f"engine {self.name} dropped the stream") from exc

    def _events(self, lines: list[bytes]) -> tuple[list[JSON], bool]:
        """The `data:` payloads among complete SSE lines, and whether `[DONE]` was among them."""
        events: list[JSON] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, `event:` lines
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return events, True
            try:
                event = orjson.loads(payload)
            except ValueError as exc:
                raise EngineFailure(f"engine {self.name} sent a malformed event") from exc
            if isinstance(event, dict):
                if "error" in event and "choices" not in event:
                    raise EngineFailure(f"engine {self.name} failed mid-stream: {event['error']}")
                if "__verbose" in event:
                    _stop_reason(event)
            events.append(event)
        return events, False

    async def in_flight(self) -> int | None:
        """Requests the engine is running or has queued, from its Prometheus `/metrics` (llama.cpp's
        `requests_processing` + `requests_deferred`, vLLM's `num_requests_running` + `num_requests_waiting`);
        None when it does not say (no metrics endpoint, another engine, no answer within 2 s)."""
        try:
            async with self._client().get(self.base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status != 200:
                    return None
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return None
        return requests_in_flight(text)

    async def healthy(self) -> bool:
        path = "/health" if self._llamacpp else "/v1/models"
        try:
            async with self._client().get(self.base_url + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def aclose(self) -> None:
        for session in (self._session, self._fresh_session):
            if session is not None and not session.closed:
                await session.close()
