"""Rewriting engine stream chunks for the client: ids, model name, tool-call holding, re-indexing."""

from __future__ import annotations

from typing import Any

from yun.gateway.tools import ToolStreamBuffer

__all__ = ["chunk_object", "has_output", "rewrite"]

JSON = dict[str, Any]


def chunk_object(path: str) -> str:
    return "chat.completion.chunk" if path.endswith("chat/completions") else "text_completion"


def has_output(choice: JSON) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))
    return bool(choice.get("text"))


def rewrite(chunk: JSON, buffer: ToolStreamBuffer | None, index_offset: int) -> list[JSON]:
    """Apply tool-call holding and choice re-indexing to one engine chunk; may give 0-3 chunks."""
    choices = chunk.get("choices") or []
    if index_offset:
        for c in choices:
            c["index"] = c.get("index", 0) + index_offset
    if buffer is None or not choices:
        return [chunk]
    choice = choices[0]
    delta = choice.get("delta") or {}
    text = delta.get("content")
    if text:
        delta["content"] = buffer.feed(text)
        if not delta["content"] and choice.get("finish_reason") is None:
            return []
    if choice.get("finish_reason") is None:
        return [chunk]
    rest, calls = buffer.finish()
    out: list[JSON] = []
    base = {k: v for k, v in chunk.items() if k != "choices"}
    if calls:
        tool_deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        out.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": tool_deltas}, "finish_reason": None}]})
        choice["finish_reason"] = "tool_calls"
        delta.pop("content", None)
    elif rest:
        out.append({**base, "choices": [{"index": 0, "delta": {"content": rest}, "finish_reason": None}]})
    out.append(chunk)
    return out
