"""Qwen's tool-call format, parsed into OpenAI `tool_calls`.

Qwen2.5 answers a tool call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; the tags are
special tokens that llama.cpp drops from the text, so what reaches us is often the bare JSON object
(one per line when several calls are made). We parse it here, for the engine's own parser loses
characters on this model.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

__all__ = ["ToolStreamBuffer", "parse_tool_calls"]

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _candidates(text: str) -> list[str]:
    tagged = _TAGGED.findall(text)
    if tagged:
        return [t for t in tagged if t.strip()]
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    # Several calls come as consecutive JSON objects; decode them one after another.
    decoder = json.JSONDecoder()
    out: list[str] = []
    pos = 0
    while pos < len(body):
        while pos < len(body) and body[pos].isspace():
            pos += 1
        if pos >= len(body):
            break
        try:
            _, end = decoder.raw_decode(body, pos)
        except ValueError:
            return []
        out.append(body[pos:end])
        pos = end
    return out


def parse_tool_calls(text: str | None, tool_names: Iterable[str], single: bool = False) -> list[dict[str, Any]] | None:
    """Return OpenAI `tool_calls` if `text` is entirely tool calls to known tools, else None. `single`
    (the client's `parallel_tool_calls: false`): only the first call."""
    if not text:
        return None
    names = set(tool_names)
    calls: list[dict[str, Any]] = []
    for raw in _candidates(text):
        try:
            obj = json.loads(raw)
        except ValueError:
            return None
        items = obj if isinstance(obj, list) else [obj]
        for item in items:
            if not isinstance(item, dict) or item.get("name") not in names:
                return None
            args = item.get("arguments", item.get("parameters", {}))
            calls.append(
                {
                    "id": "call_" + uuid.uuid4().hex[:24],
                    "type": "function",
                    "function": {
                        "name": item["name"],
                        "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                    },
                }
            )
    return (calls[:1] if single else calls) or None


class ToolStreamBuffer:
    """Holds streamed text back while it may still turn out to be a tool call.

    Text that cannot start a tool call (anything not opening with `{`, `[`, a code fence or `<tool_call>`)
    is released at once, so ordinary answers stream with no added delay.
    """

    _OPENERS = ("{", "[", "```", "<tool_call>")

    def __init__(self, tool_names: Iterable[str], single: bool = False) -> None:
        self.names = list(tool_names)
        self.single = single
        """Only the first call (`parallel_tool_calls: false`)."""
        self.held = ""
        self.passing = False

    def feed(self, text: str) -> str:
        """Take a content delta; return the text that may be sent on now."""
        if self.passing:
            return text
        self.held += text
        head = self.held.lstrip()
        if not head:
            return ""
        if any(head.startswith(o) or o.startswith(head) for o in self._OPENERS):
            return ""
        self.passing = True
        out, self.held = self.held, ""
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]] | None]:
        """At the end of the stream: (text still to send, tool calls if the held text was tool calls)."""
        if self.passing or not self.held:
            return "", None
        calls = parse_tool_calls(self.held, self.names, self.single)
        if calls is not None:
            return "", calls
        return self.held, None
