"""Translate a chat request into the engine's body: what we forward, what we refuse."""

from __future__ import annotations

from yun.api.openai.chat.protocol import ChatCompletionRequest, ChatMessage, ResponseFormat
from yun.engines import JSON
from yun.errors import InvalidRequest, UnsupportedParameter

__all__ = ["engine_body"]


def _message(m: ChatMessage, i: int) -> JSON:
    out: JSON = {"role": "system" if m.role == "developer" else m.role}
    if isinstance(m.content, list):
        texts = []
        for part in m.content:
            if part.type != "text" or part.text is None:
                raise UnsupportedParameter(
                    f"content part type {part.type!r} is not supported by this model (text only)",
                    param=f"messages.{i}.content",
                )
            texts.append(part.text)
        out["content"] = "\n".join(texts)  # as llama.cpp joins them: the same prompt as the bare engine
    elif m.content is not None:
        out["content"] = m.content
    elif m.role in ("user", "system", "developer"):
        raise InvalidRequest(f"messages.{i}.content is required for role {m.role!r}", param=f"messages.{i}.content")
    for name in ("name", "tool_calls", "tool_call_id"):
        value = getattr(m, name)
        if value is not None:
            out[name] = value
    return out


def _response_format(rf: ResponseFormat) -> JSON:
    fmt: JSON = {"type": rf.type}
    if rf.type == "json_schema":
        schema = rf.json_schema
        if schema is None or schema.schema_ is None:
            raise InvalidRequest(
                "response_format.json_schema.schema is required for type json_schema",
                param="response_format.json_schema",
            )
        fmt["json_schema"] = {"name": schema.name, "schema": schema.schema_, "strict": bool(schema.strict)}
    elif rf.schema_ is not None:
        # llama.cpp's json_object-with-schema, said the way every engine understands (OpenAI's json_schema).
        fmt = {"type": "json_schema", "json_schema": {"name": "response", "schema": rf.schema_}}
    return fmt


def engine_body(req: ChatCompletionRequest, extensions: list[str] | None = None) -> JSON:
    """The engine's body; `extensions`: the llama.cpp extensions the request sets (`req.extensions()`,
    computed here if not given)."""
    sampling = req.sampling(req.extensions() if extensions is None else extensions)
    body: JSON = {"messages": [_message(m, i) for i, m in enumerate(req.messages)], **sampling}
    max_tokens = req.output_bound(req.max_completion_tokens or req.max_tokens)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if req.response_format is not None and req.response_format.type != "text":
        body["response_format"] = _response_format(req.response_format)
    if req.tools and req.tool_choice != "none":
        names = {t.function.name for t in req.tools}
        body["tools"] = [t.model_dump(exclude_none=True, by_alias=True) for t in req.tools]
        if req.tool_choice is not None and not isinstance(req.tool_choice, str):
            wanted = req.tool_choice.function.get("name")
            if wanted not in names:
                raise InvalidRequest(f"tool_choice names unknown tool {wanted!r}", param="tool_choice")
            body["tool_choice"] = req.tool_choice.model_dump()
        elif req.tool_choice is not None:
            body["tool_choice"] = req.tool_choice
    elif req.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice needs tools", param="tool_choice")
    if req.parallel_tool_calls is not None and "tools" in body:
        body["parallel_tool_calls"] = req.parallel_tool_calls  # the gateway's tool-call parser honours it too
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs is not None:
            body["top_logprobs"] = req.top_logprobs
    return body
