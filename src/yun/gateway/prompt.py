"""How many tokens a request's prompt is, before it runs: counted with the model's own tokenizer.

The count sizes the credit hold, the default `max_tokens` (the slot's context left after the prompt),
the tokens-per-minute check, and refuses a prompt longer than the served context before any rate limit
or engine sees it (a 400 the OpenAI SDK does not retry).

Why the count is an upper bound on what the engine bills as `prompt_tokens` (the hold must cover the
real charge: a balance never goes below zero):
- for a local GGUF model it is the exact count of the same rendered text by the same vocabulary, merges
  and special tokens the replica uses (catalog/tokenizer.py), checked equal to the engine's own count in
  tests/integration/test_prompt_count.py. Where our render could differ from llama.cpp's (structured
  content: tools, tool calls, content parts, all rendered through JSON), a margin is added; a template
  our jinja cannot run falls back to the byte bound;
- for models without a tokenizer here (external OpenAI-compatible URLs, vocabularies we cannot rebuild)
  it is the byte bound of estimate.py: at most one token per UTF-8 byte plus the template's allowance.
  Such a bound is not a count, so it never refuses a prompt as too long (the upstream decides).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yun.catalog.tokenizer import PromptCounter, load_counter
from yun.cluster import ReplicaSpec
from yun.gateway.estimate import chat_prompt_bound, input_bound

__all__ = ["PromptCount", "PromptCounts", "as_engine_renders"]

log = logging.getLogger("yun.gateway")

# Text longer than this is tokenized on a worker thread (the tokenizer releases the GIL), so that no
# request holds the event loop for more than ~0.5 ms of tokenizing (~0.2 µs per character, measured
# with bench/prompt_count.py). Shorter prompts cost less than the hop to a thread and back.
_INLINE_CHARS = 2048


@dataclass(frozen=True)
class PromptCount:
    tokens: int
    """An upper bound on the prompt tokens the engine will bill."""
    exact: bool
    """Counted by the model's own tokenizer: the context check may refuse on it."""


def _text_size(body: Any) -> int:
    if isinstance(body, str):
        return len(body)
    if isinstance(body, list | tuple):
        return sum(_text_size(b) for b in body)
    if isinstance(body, dict):
        return sum(_text_size(v) for v in body.values())
    return 0


def as_engine_renders(messages: list[Any]) -> tuple[list[Any], bool]:
    """The messages as llama.cpp hands them to the template: text parts joined by newlines, tool-call
    arguments parsed from their JSON string. Also whether anything structured was there."""
    out: list[Any] = []
    structured = False
    for m in messages:
        if not isinstance(m, dict):
            out.append(m)
            continue
        content, calls = m.get("content"), m.get("tool_calls")
        if isinstance(content, list):
            structured = True
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            m = {**m, "content": "\n".join(t for t in texts if isinstance(t, str))}
        if calls:
            structured = True
            m = {**m, "tool_calls": [_parsed_arguments(c) for c in calls]}
        out.append(m)
    return out, structured


def _parsed_arguments(call: Any) -> Any:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str):
        return call
    try:
        arguments = json.loads(fn["arguments"])
    except ValueError:
        return call
    return {**call, "function": {**fn, "arguments": arguments}}


def _margin(tokens: int) -> int:
    """Slack for text our jinja renders through JSON (spacing, escapes) where llama.cpp's may differ."""
    return tokens // 50 + 16


class PromptCounts:
    """Per-model prompt counters, each loaded once (on a thread) from the model's GGUF file."""

    def __init__(self) -> None:
        self._counters: dict[str, asyncio.Future[PromptCounter | None]] = {}

    def prepare(self, spec: ReplicaSpec) -> asyncio.Future[PromptCounter | None] | None:
        """Start loading `spec`'s counter (deployments call this, so the first request does not wait)."""
        if spec.external or not spec.path:
            return None
        loading = self._counters.get(spec.path)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(self._load, Path(spec.path)))
            self._counters[spec.path] = loading
        return loading

    @staticmethod
    def _load(path: Path) -> PromptCounter | None:
        try:
            return load_counter(path)
        except Exception:  # noqa: BLE001 - no tokenizer only loosens the bound; the model still serves
            log.warning("cannot build a tokenizer for %s; its prompts are bounded by bytes", path, exc_info=True)
            return None

    async def _counter(self, spec: ReplicaSpec) -> PromptCounter | None:
        loading = self.prepare(spec)
        return None if loading is None else await asyncio.shield(loading)

    async def chat(self, spec: ReplicaSpec, body: dict[str, Any], margin: bool = True) -> PromptCount:
        """`margin=False`: our render's own count, without the slack a hold adds for structured content."""
        counter = await self._counter(spec)
        if counter is not None:
            messages, structured = as_engine_renders(body.get("messages") or [])
            rendered = {"messages": messages, "tools": body.get("tools")}
            structured = structured or bool(body.get("tools"))
            if counter.new_chars(messages) + _text_size(body.get("tools")) <= _INLINE_CHARS:
                n = counter.chat(rendered)
            else:
                n = await asyncio.to_thread(counter.chat, rendered)
            if n is not None:
                return PromptCount(n + _margin(n) if structured and margin else n, exact=True)
        return PromptCount(chat_prompt_bound(body), exact=False)

    async def inputs(self, spec: ReplicaSpec, items: Sequence[Any]) -> list[PromptCount]:
        """Completion prompts or embedding inputs: text, or token ids (their count is exact as it is)."""
        counter = await self._counter(spec)
        if counter is None:
            return [PromptCount(input_bound(i), exact=False) for i in items]
        if _text_size(list(items)) <= _INLINE_CHARS:
            return self._count_inputs(counter, items)
        return await asyncio.to_thread(self._count_inputs, counter, items)

    async def detokenize(self, spec: ReplicaSpec, ids: list[int]) -> str | None:
        """A prompt given as token ids, as text, by the model's own vocabulary (see
        `PromptCounter.detokenize`); None where the gateway has no decoder for it."""
        counter = await self._counter(spec)
        return None if counter is None else counter.detokenize(ids)

    @staticmethod
    def _count_inputs(counter: PromptCounter, items: Sequence[Any]) -> list[PromptCount]:
        out = []
        for item in items:
            if isinstance(item, str):
                out.append(PromptCount(counter.text(item), exact=True))
            elif isinstance(item, list):
                out.append(PromptCount(len(item) + counter.add_bos + counter.add_eos, exact=True))
            else:
                out.append(PromptCount(input_bound(item), exact=False))
        return out
