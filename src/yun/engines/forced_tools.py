"""`tool_choice: "required"` or a named function, for engines that cannot force a tool call themselves.

llama.cpp, with its own tool-call parser off (it drops characters of Qwen's calls, see gateway/tools.py),
does not constrain the output for `required`: measured on Qwen2.5-Coder-0.5B, the model wrote the call
and then kept talking until max_tokens, so no call could be parsed. Instead the engine is given a JSON
schema (a grammar) that admits exactly one call, `{"name": <a permitted tool>, "arguments": {...}}`,
which the gateway's parser turns into OpenAI `tool_calls`. The tools stay in the request, so the chat
template still describes them to the model.
"""

from __future__ import annotations

from typing import Any

from yun.engines.base import JSON

__all__ = ["force_tool_call"]


def _call_schema(tool: JSON) -> JSON | None:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None
    params = fn.get("parameters")
    arguments: JSON = params if isinstance(params, dict) and params else {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def force_tool_call(body: JSON) -> JSON:
    """Rewrite a body whose tool_choice demands a call into one whose output schema is that call.
    Bodies that do not demand a call are returned unchanged."""
    choice: Any = body.get("tool_choice")
    tools = body.get("tools") or []
    if choice == "required":
        allowed = tools
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        allowed = [t for t in tools if isinstance(t, dict) and (t.get("function") or {}).get("name") == name]
    else:
        return body
    options = [s for s in (_call_schema(t) for t in allowed) if s is not None]
    if not options:
        return body
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {
        **body,
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}},
    }
