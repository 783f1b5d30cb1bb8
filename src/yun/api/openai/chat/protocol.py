"""Wire models of POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from yun.api.openai.wire import Role, SamplingFields, Wire

__all__ = ["ChatCompletionRequest", "ChatMessage", "ResponseFormat", "Tool"]


class ContentPart(Wire):
    type: str
    text: str | None = None


class ChatMessage(Wire):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionDef(Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Wire):
    type: Literal["function"]
    function: FunctionDef


class JsonSchemaFormat(Wire):
    name: str = Field(default="response", min_length=1, max_length=64)  # OpenAI requires it; llama.cpp not
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    """llama.cpp's extension: `{"type": "json_object", "schema": {...}}` constrains the object to a schema."""


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: dict[str, str]


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=100_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
