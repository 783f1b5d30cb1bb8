"""A Responses request as the chat body the gateway serves, and a chat answer as a Responses object.

The Responses API is a different wire over the same model call: input items become chat messages,
flat function tools become chat tools, `text.format` becomes `response_format`, and the answer's
message and tool calls become `message` and `function_call` output items. The chat body is built by the
chat endpoint's own `engine_body`, so both endpoints forward and refuse the same things.
"""

from __future__ import annotations

import random
import time
from typing import Any

from pydantic import ValidationError

from yun.api.errors import validation_message
from yun.api.openai.chat.protocol import ChatCompletionRequest
from yun.api.openai.chat.service import engine_body
from yun.api.openai.responses_api.protocol import NamedFunction, ResponseCreateRequest
from yun.engines import JSON
from yun.errors import InvalidRequest, UnsupportedParameter

__all__ = [
    "chat_body",
    "function_call_item",
    "input_items",
    "item_id",
    "message_item",
    "response_object",
    "response_output",
    "response_usage",
]

_ROLES = {"user", "assistant", "system", "developer"}
_TEXT_PARTS = {"input_text", "output_text", "text"}


def item_id(prefix: str) -> str:
    """An item id as OpenAI shapes them (`msg_…`, `fc_…`): a prefix and 48 random hex digits."""
    return f"{prefix}_{random.getrandbits(192):048x}"


def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or a list of content parts", param=param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise UnsupportedParameter(
                f"content part type {kind!r} is not supported by this model (text only)", param=f"{param}.{j}"
            )
    return "".join(texts)


def input_items(value: str | list[dict[str, Any]] | None) -> list[JSON]:
    """The request's input as items with ids (what is stored and listed by /input_items), each checked
    here so that a bad one is refused with its place (`input.2`) before anything runs."""
    if value is None:
        return []
    if isinstance(value, str):
        return [message_item("user", value)]
    items: list[JSON] = []
    for i, raw in enumerate(value):
        param = f"input.{i}"
        kind = raw.get("type", "message")
        if kind == "message":
            role = raw.get("role")
            if role not in _ROLES:
                raise InvalidRequest(f"'{param}.role' must be one of {sorted(_ROLES)}, got {role!r}", param=param)
            text = _text_of(raw.get("content"), f"{param}.content")
            items.append({**message_item(role, text), **({"id": raw["id"]} if isinstance(raw.get("id"), str) else {})})
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                if not isinstance(raw.get(field), str):
                    raise InvalidRequest(f"'{param}.{field}' is required (a string)", param=f"{param}.{field}")
            items.append(
                {
                    "type": "function_call",
                    "id": raw.get("id") if isinstance(raw.get("id"), str) else item_id("fc"),
                    "call_id": raw["call_id"],
                    "name": raw["name"],
                    "arguments": raw["arguments"],
                    "status": "completed",
                }
            )
        elif kind == "function_call_output":
            if not isinstance(raw.get("call_id"), str):
                raise InvalidRequest(f"'{param}.call_id' is required (a string)", param=f"{param}.call_id")
            output = _text_of(raw.get("output"), f"{param}.output")
            items.append(
                {
                    "type": "function_call_output",
                    "id": raw.get("id") if isinstance(raw.get("id"), str) else item_id("fco"),
                    "call_id": raw["call_id"],
                    "output": output,
                    "status": "completed",
                }
            )
        else:
            raise UnsupportedParameter(
                f"input item type {kind!r} is not supported here (served: message, function_call, "
                "function_call_output)",
                param=f"{param}.type",
            )
    return items


def message_item(role: str, text: str) -> JSON:
    part = "output_text" if role == "assistant" else "input_text"
    content: JSON = {"type": part, "text": text}
    if role == "assistant":
        content["annotations"] = []
    return {"type": "message", "id": item_id("msg"), "role": role, "content": [content], "status": "completed"}


def _messages(items: list[JSON]) -> list[JSON]:
    """Chat messages of a conversation's items (each already checked by `input_items`, or our own output).
    A function call joins the assistant message just before it: one assistant turn, as chat has it."""
    out: list[JSON] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            out.append({"role": item["role"], "content": _text_of(item["content"], "input")})
        elif kind == "function_call":
            fn = {"name": item["name"], "arguments": item["arguments"]}
            call = {"id": item["call_id"], "type": "function", "function": fn}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return out


def _refuse_unserved_tools(req: ResponseCreateRequest) -> None:
    for t, tool in enumerate(req.tools or []):
        if tool.type != "function":
            raise UnsupportedParameter(
                f"Tool type {tool.type!r} is not supported: this server runs function tools only "
                "(web search, file search, code interpreter and other built-in tools are not available)",
                param=f"tools.{t}.type",
            )
        if tool.name is None:
            raise InvalidRequest(f"'tools.{t}.name' is required for function tools", param=f"tools.{t}.name")
    if isinstance(req.tool_choice, NamedFunction):
        if req.tool_choice.type != "function":
            raise UnsupportedParameter(
                f"tool_choice type {req.tool_choice.type!r} is not supported (function tools only)", param="tool_choice"
            )
        if req.tool_choice.name is None:
            raise InvalidRequest("'tool_choice.name' is required", param="tool_choice.name")


def _refuse_unserved(req: ResponseCreateRequest) -> None:
    _refuse_unserved_tools(req)
    if req.include:  # an empty list is what SDKs send; every value asks for something not served here
        raise UnsupportedParameter(f"include value {req.include[0]!r} is not supported", param="include")
    if req.truncation == "auto":
        raise UnsupportedParameter(
            "truncation 'auto' is not supported: a conversation longer than the context is refused, never cut",
            param="truncation",
        )
    if req.reasoning and any(v is not None for v in req.reasoning.values()):
        raise UnsupportedParameter("reasoning options are not supported with this model", param="reasoning")
    if req.background:
        raise UnsupportedParameter("background responses are not supported", param="background")
    for name, what in (
        ("conversation", "conversations are not served (use previous_response_id)"),
        ("prompt", "prompt templates are not served"),
        ("context_management", "context management is not served"),
    ):
        if getattr(req, name) is not None:
            raise UnsupportedParameter(f"{name} is not supported: {what}", param=name)
    if req.top_logprobs:
        raise UnsupportedParameter("top_logprobs is not supported on /v1/responses", param="top_logprobs")
    if req.text is not None and req.text.verbosity not in (None, "medium"):
        raise UnsupportedParameter("text.verbosity is not supported with this model", param="text.verbosity")


def chat_body(req: ResponseCreateRequest, history: list[JSON], items: list[JSON]) -> JSON:
    """The chat body for the gateway: instructions, the stored conversation (`history`), then this input."""
    _refuse_unserved(req)
    messages = _messages(history + items)
    if req.instructions:
        messages.insert(0, {"role": "system", "content": req.instructions})
    if not messages:
        raise InvalidRequest("input is required", param="input")
    chat: JSON = {"model": req.model, "messages": messages}
    if req.max_output_tokens is not None:
        chat["max_completion_tokens"] = req.max_output_tokens
    for name in ("temperature", "top_p", "user"):
        if getattr(req, name) is not None:
            chat[name] = getattr(req, name)
    _tools_and_format(req, chat)
    try:
        parsed = ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
        raise InvalidRequest(message, param=param) from exc
    body = engine_body(parsed)
    if "tools" in body:
        # OpenAI's default is parallel calls allowed; llama.cpp's is one call, so say it either way.
        body["parallel_tool_calls"] = req.parallel_tool_calls is not False
    return body


def _tools_and_format(req: ResponseCreateRequest, chat: JSON) -> None:
    """Flat function tools as chat's, the named tool choice as chat's, `text.format` as `response_format`."""
    if req.tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": t.model_dump(include={"name", "description", "parameters", "strict"}, exclude_none=True),
            }
            for t in req.tools
        ]
    if isinstance(req.tool_choice, str):
        chat["tool_choice"] = req.tool_choice
    elif isinstance(req.tool_choice, NamedFunction):
        chat["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type == "json_schema":
        if fmt.name is None or fmt.schema_ is None:
            raise InvalidRequest(
                "text.format.name and text.format.schema are required for json_schema", param="text.format"
            )
        schema = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict, "description": fmt.description}
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {k: v for k, v in schema.items() if v is not None},
        }
    elif fmt is not None:
        chat["response_format"] = {"type": fmt.type}


def response_output(answer: JSON) -> tuple[list[JSON], bool]:
    """The output items of a chat answer, and whether it stopped at the output bound (incomplete)."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    truncated = choice.get("finish_reason") == "length"
    out: list[JSON] = []
    text = message.get("content")
    if text:
        item = message_item("assistant", text)
        item["status"] = "incomplete" if truncated else "completed"
        out.append(item)
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        out.append(function_call_item(call.get("id"), fn.get("name", ""), fn.get("arguments") or "", "completed"))
    return out, truncated


def function_call_item(call_id: str | None, name: str, arguments: str, status: str) -> JSON:
    return {
        "type": "function_call",
        "id": item_id("fc"),
        "call_id": call_id or item_id("call"),
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_usage(usage: JSON) -> JSON:
    """Responses' usage from the gateway's (the engine's own counts, as billed)."""
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": details.get("cached_tokens", 0)},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
        "cost": usage.get("cost", 0),
    }


def response_object(
    req: ResponseCreateRequest,
    response_id: str,
    model: str,
    *,
    status: str = "completed",
    output: list[JSON] | None = None,
    usage: JSON | None = None,
    error: JSON | None = None,
    created_at: int | None = None,
) -> JSON:
    """The response object, echoing the request's settings as OpenAI does."""
    tools = [
        {"type": "function", **t.model_dump(include={"name", "description", "parameters", "strict"})}
        for t in req.tools or []
    ]
    tool_choice: Any = req.tool_choice or "auto"
    if isinstance(req.tool_choice, NamedFunction):
        tool_choice = {"type": "function", "name": req.tool_choice.name}
    fmt: JSON = {"type": "text"}
    if req.text is not None and req.text.format is not None:
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True)
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": model,
        "output": output or [],
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": req.store,
        "temperature": req.temperature,
        "text": {"format": fmt, "verbosity": "medium"},
        "tool_choice": tool_choice,
        "tools": tools,
        "top_logprobs": 0,
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": req.user,
        "metadata": req.metadata or {},
    }
