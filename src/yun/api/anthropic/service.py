"""Translate a Messages request into the chat body the gateway serves, and the chat answer back.

The body is the one api/openai/chat/service.py `engine_body` makes for the same conversation, so the
gateway's `chat` / `chat_stream` hold, meter and settle it as any chat completion (one usage record,
the engine's own counts), and the engine sees the same prompt:
- `system` (a string or text blocks) is the first message, role "system";
- a user turn's text blocks are its content (joined by newlines, as llama.cpp joins text parts); each
  `tool_result` block becomes a "tool" message answering its `tool_use_id` (with `is_error`, its text is
  prefixed "Error: ", the one way a chat template can tell the model);
- an assistant turn's `tool_use` blocks are its `tool_calls` (the input as a JSON string);
- `tools` become functions (`input_schema` is the parameters), `tool_choice` auto/any/tool/none becomes
  auto/required/the named function/none, `stop_sequences` is `stop`, `top_k` llama.cpp's extension,
  `output_config.format` (a JSON schema) the `response_format` (`effort` changes nothing on these models);
- images, documents, extended thinking and Anthropic's server tools are refused with a 400 naming the
  field: the models served here read text, and nothing a client sends is silently dropped.

Back: the message's text and tool calls become content blocks, `finish_reason` the `stop_reason`
(length: max_tokens, tool_calls: tool_use, stop: stop_sequence when the engine names the sequence that
ended the output, end_turn otherwise), and the usage Anthropic's (`input_tokens` without the tokens read
from the engine's prompt cache, which are `cache_read_input_tokens`: together the billed prompt tokens).
"""

from __future__ import annotations

import json
from typing import Any

from yun.api.anthropic.protocol import Block, CountTokensRequest, InputMessage, MessagesRequest, ToolDef
from yun.engines import JSON
from yun.errors import InvalidRequest, UnsupportedParameter

__all__ = ["chat_body", "count_body", "message_answer", "stop_reason", "tool_use_block", "tool_use_id", "usage_answer"]

_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _refuse_block(block: Block, where: str) -> None:
    kind = block.type
    if kind in ("image", "document", "search_result", "container_upload"):
        raise UnsupportedParameter(f"{kind} content is not supported by this model (text only)", param=where)
    if kind in ("thinking", "redacted_thinking"):
        raise UnsupportedParameter("thinking blocks are not supported by this model", param=where)
    raise InvalidRequest(f"unknown content block type {kind!r} in a message", param=where)


def _text(block: Block, where: str) -> str:
    if block.text is None:
        raise InvalidRequest("a text block needs `text`", param=f"{where}.text")
    return block.text


def _texts(blocks: str | list[Block], where: str) -> str:
    """Text blocks as one string (what llama.cpp makes of text parts: joined by newlines)."""
    if isinstance(blocks, str):
        return blocks
    parts = []
    for j, block in enumerate(blocks):
        if block.type != "text":
            _refuse_block(block, f"{where}.{j}")
        parts.append(_text(block, f"{where}.{j}"))
    return "\n".join(parts)


def _tool_call(block: Block, where: str) -> JSON:
    if not block.id or not block.name or block.input is None:
        raise InvalidRequest("a tool_use block needs `id`, `name` and `input`", param=where)
    arguments = json.dumps(block.input, ensure_ascii=False)
    return {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}}


def _tool_message(block: Block, where: str) -> JSON:
    if not block.tool_use_id:
        raise InvalidRequest("a tool_result block needs `tool_use_id`", param=f"{where}.tool_use_id")
    text = _texts(block.content, f"{where}.content") if block.content is not None else ""
    if block.is_error:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _turn(m: InputMessage, i: int, out: list[JSON]) -> None:
    """Append the chat messages of one Messages turn to `out`."""
    where = f"messages.{i}.content"
    if isinstance(m.content, str):
        out.append({"role": m.role, "content": m.content})
        return
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(m.content):
        at = f"{where}.{j}"
        if block.type == "text":
            texts.append(_text(block, at))
        elif block.type == "tool_use" and m.role == "assistant":
            calls.append(_tool_call(block, at))
        elif block.type == "tool_result" and m.role == "user":
            if texts:  # text before a result is its own user message, in order
                out.append({"role": "user", "content": "\n".join(texts)})
                texts = []
            out.append(_tool_message(block, at))
        elif block.type in ("tool_use", "tool_result"):
            owner = "assistant" if block.type == "tool_use" else "user"
            raise InvalidRequest(f"{block.type} blocks belong in {owner} turns", param=at)
        else:
            _refuse_block(block, at)
    if m.role == "assistant":
        message: JSON = {"role": "assistant", "content": "\n".join(texts) if texts or not calls else None}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    elif texts:
        out.append({"role": "user", "content": "\n".join(texts)})
    elif not m.content:
        raise InvalidRequest("a user turn needs at least one content block", param=where)


def _function(tool: ToolDef, i: int) -> JSON:
    if tool.type not in (None, "custom"):
        raise UnsupportedParameter(f"tool type {tool.type!r} is not supported (client tools only)", param=f"tools.{i}")
    if tool.input_schema is None:
        raise InvalidRequest("a tool needs `input_schema`", param=f"tools.{i}.input_schema")
    fn: JSON = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        fn["description"] = tool.description
    return {"type": "function", "function": fn}


def count_body(req: CountTokensRequest) -> JSON:
    """The chat body's messages and tools: what the prompt is made of (count_tokens counts this)."""
    if req.thinking is not None and req.thinking.type != "disabled":
        raise UnsupportedParameter("extended thinking is not supported by this model", param="thinking")
    messages: list[JSON] = []
    if req.system is not None:
        system = _texts(req.system, "system")
        if system:
            messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        _turn(m, i, messages)
    body: JSON = {"messages": messages}
    choice = req.tool_choice
    if req.tools and (choice is None or choice.type != "none"):
        body["tools"] = [_function(t, i) for i, t in enumerate(req.tools)]
        if choice is not None and choice.type == "any":
            body["tool_choice"] = "required"
        elif choice is not None and choice.type == "tool":
            if choice.name not in {t.name for t in req.tools}:
                raise InvalidRequest(f"tool_choice names unknown tool {choice.name!r}", param="tool_choice.name")
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        if choice is not None and choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    elif choice is not None and choice.type in ("any", "tool"):
        raise InvalidRequest(f"tool_choice {choice.type!r} needs tools", param="tool_choice")
    return body


def chat_body(req: MessagesRequest) -> JSON:
    body = count_body(req)
    body["max_tokens"] = req.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.stop_sequences:
        if any(not s for s in req.stop_sequences):
            raise InvalidRequest("stop_sequences must not contain empty strings", param="stop_sequences")
        body["stop"] = req.stop_sequences
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.schema_, "strict": True},
        }
    return body


def stop_reason(choice: JSON, stop_sequences: list[str] | None) -> tuple[str | None, str | None]:
    """(stop_reason, stop_sequence) of a finished chat choice."""
    finish = choice.get("finish_reason")
    if finish is None:
        return None, None
    mapped = _STOP_REASONS.get(finish)
    if mapped is not None:
        return mapped, None
    matched = choice.get("stop_reason")  # the engine's own word for it (engines/openai_http.py, vLLM)
    if isinstance(matched, str) and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def tool_use_block(call: JSON) -> JSON | None:
    """A chat tool call as a tool_use block (None if its arguments are not a JSON object)."""
    fn = call.get("function") or {}
    try:
        arguments = json.loads(fn.get("arguments") or "{}")
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    return {"type": "tool_use", "id": tool_use_id(call), "name": fn.get("name"), "input": arguments}


def tool_use_id(call: JSON) -> str:
    """Anthropic's id for a chat tool call (`call_x` -> `toolu_x`); the client sends it back as is."""
    return "toolu_" + str(call.get("id") or "").removeprefix("call_")


def usage_answer(usage: dict[str, Any]) -> JSON:
    """Anthropic's usage from the gateway's (the engine's counts, as billed)."""
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "cost": usage.get("cost", 0.0),
    }


def message_answer(data: JSON, stop_sequences: list[str] | None) -> JSON:
    """The gateway's chat completion as a Messages answer."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        block = tool_use_block(call)
        # Arguments that are no JSON object cannot be a tool_use; the client still gets what the model wrote.
        content.append(block or {"type": "text", "text": (call.get("function") or {}).get("arguments") or ""})
    reason, sequence = stop_reason(choice, stop_sequences)
    return {
        "id": data["id"],
        "type": "message",
        "role": "assistant",
        "model": data["model"],
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_answer(data["usage"]),
    }
