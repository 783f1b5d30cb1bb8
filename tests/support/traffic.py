"""Steady client traffic through a gateway with the official `openai` client, every outcome recorded.

Each client is a thread sending one request after another (streamed or not) until stopped; a failure is
recorded with its error and the client carries on, so a test can say which requests failed and when (in
`time.monotonic()`, comparable with the moments it killed something), and a benchmark can count tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import openai
from openai.types.chat import ChatCompletionMessageParam

__all__ = ["Outcome", "Traffic"]


@dataclass(frozen=True)
class Outcome:
    client: int
    stream: bool
    started: float
    """time.monotonic() when the request was sent"""
    ended: float
    """time.monotonic() when its answer (or its failure) was complete"""
    tokens: int
    """completion tokens, from the answer's usage (0 for a failure)"""
    error: str | None = None
    """None: it succeeded"""


class Traffic:
    """`clients` threads sending requests to `model` through `base_url` (the gateway, without `/v1`).
    Client i streams if `stream[i % len(stream)]`. The openai client never retries by itself here: every
    failure the gateway lets through is seen."""

    def __init__(
        self,
        base_url: str,
        key: str,
        model: str,
        *,
        clients: int = 2,
        stream: Sequence[bool] = (False, True),
        max_tokens: int = 4,
        prompt: str = "hi",
        timeout_s: float = 120.0,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.prompt = prompt
        self._client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=timeout_s)
        self._streams = [stream[i % len(stream)] for i in range(clients)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"traffic-{i}", daemon=True) for i in range(clients)
        ]

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending (each client finishes the request it has under way) and return every outcome."""
        self._stop.set()
        for t in self._threads:
            t.join(self._client.timeout if isinstance(self._client.timeout, float) else 120.0)
        assert not any(t.is_alive() for t in self._threads), "a traffic client is stuck"
        return self.outcomes()

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return sorted(self._outcomes, key=lambda o: o.started)

    def _loop(self, client: int) -> None:
        stream = self._streams[client]
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                tokens = self._streamed() if stream else self._answered()
                error = None
            except openai.OpenAIError as exc:
                tokens, error = 0, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._outcomes.append(Outcome(client, stream, started, time.monotonic(), tokens, error))

    def _messages(self) -> list[ChatCompletionMessageParam]:
        return [{"role": "user", "content": self.prompt}]

    def _answered(self) -> int:
        answer = self._client.chat.completions.create(
            model=self.model,
            messages=self._messages(),
            max_tokens=self.max_tokens,
        )
        if answer.usage is None or not answer.choices:
            raise openai.OpenAIError(f"an answer without usage or choices: {answer}")
        tokens: int = answer.usage.completion_tokens
        return tokens

    def _streamed(self) -> int:
        chunks = self._client.chat.completions.create(
            model=self.model,
            messages=self._messages(),
            max_tokens=self.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        finished, tokens = False, None
        for chunk in chunks:
            finished |= any(choice.finish_reason is not None for choice in chunk.choices)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        if not finished or tokens is None:
            raise openai.OpenAIError(f"a stream that ended without a finish reason or usage (usage: {tokens})")
        return tokens
