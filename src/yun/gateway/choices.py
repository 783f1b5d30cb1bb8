"""Several choices for one request, and the legacy completions' own shape of a choice.

`n` choices are `n` engine requests under the request's one hold: llama.cpp can generate several choices
itself, but its `usage` then counts the output of one of them only (measured: n=2, 3 tokens each,
`completion_tokens: 3`), and a bill must be the engine's own count of everything generated. Each engine
answer carries its own exact usage; the hold covers all n (prompt and max output, n times) and settles
their sum, in one usage record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from yun.engines import JSON

__all__ = ["TextChoices", "choice_bodies", "fan_out"]

_SEED_SPAN = 2**32  # llama.cpp's seeds are 32-bit


def choice_bodies(body: JSON, n: int) -> list[JSON]:
    """One engine body per choice. A seed makes sampling reproducible, so choice i gets seed + i: the n
    choices differ as OpenAI's do, and the same request gives the same n choices again."""
    if n == 1:
        return [body]
    seed = body.get("seed")
    if seed is None:
        return [body] * n
    return [{**body, "seed": (seed + i) % _SEED_SPAN if i else seed} for i in range(n)]


async def fan_out(call: Callable[[JSON], Coroutine[Any, Any, JSON]], bodies: list[JSON]) -> list[JSON]:
    """`call` each body concurrently (each takes its own replica slot) and return the answers in order.
    If one fails, the others are cancelled and its error is raised (not an ExceptionGroup: the API maps
    domain errors). `call` folds each answer's usage into the hold as it arrives, so what finished is
    billed even when another one fails."""
    if len(bodies) == 1:
        return [await call(bodies[0])]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call(b)) for b in bodies]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


class TextChoices:
    """Turns the engine's text-completion choices into OpenAI's legacy shape, in place, chunk by chunk:

    - `logprobs` as `{tokens, token_logprobs, top_logprobs, text_offset}` (llama.cpp answers in chat's
      `{content: [{token, logprob, top_logprobs}]}`), with `text_offset` running across a stream's chunks;
    - `echo`: the prompt's text before the choice's first text (llama.cpp does not echo).
    """

    __slots__ = ("_echo", "_offsets")

    def __init__(self, echo: list[str] | None) -> None:
        self._echo = echo
        """The prompt text of each choice index, when echoing."""
        self._offsets: dict[int, int] = {}

    def choice(self, c: JSON) -> None:
        i = c.get("index", 0)
        offset = self._offsets.get(i)
        if offset is None:
            offset = 0
            if self._echo is not None:
                prompt = self._echo[i]
                c["text"] = prompt + (c.get("text") or "")
                offset = len(prompt)
        lp = c.get("logprobs")
        if isinstance(lp, dict) and isinstance(lp.get("content"), list):
            tokens: list[str] = []
            logprobs: list[float | None] = []
            top: list[dict[str, float]] = []
            offsets: list[int] = []
            for t in lp["content"]:
                token = str(t.get("token", ""))
                tokens.append(token)
                logprobs.append(t.get("logprob"))
                top.append({str(x.get("token", "")): x.get("logprob") for x in t.get("top_logprobs") or ()})
                offsets.append(offset)
                offset += len(token)
            c["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}
        self._offsets[i] = offset
