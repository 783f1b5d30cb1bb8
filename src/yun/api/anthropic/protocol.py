"""Wire models of Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens.

Lenient about fields Anthropic adds (unknown ones are accepted and logged, as on the OpenAI routes),
strict about types. Content blocks are one model with the fields of every block type: which fields a
type needs, and which types are served at all, is checked in service.py, where the error can name the
block (`messages.2.content.0`) in words an Anthropic client understands.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yun.api.openai.wire import Wire

__all__ = [
    "Block",
    "CountTokensRequest",
    "InputMessage",
    "Message",
    "MessagesRequest",
    "TokenCount",
    "ToolChoice",
    "ToolDef",
]


class Block(Wire):
    """A content block: text, tool_use, tool_result (or image, document, thinking: refused)."""

    type: str = Field(min_length=1, max_length=64)
    text: str | None = None
    id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    input: dict[str, Any] | None = None
    tool_use_id: str | None = Field(default=None, max_length=256)
    content: str | list[Block] | None = None
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None
    """A prompt-caching hint; llama.cpp reuses a slot's cached prefix on its own, so none is needed."""


class InputMessage(Wire):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    """Absent or "custom" for a client tool; Anthropic's server tools (web search, ...) are refused."""
    cache_control: dict[str, Any] | None = None


class ToolChoice(Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Wire):
    type: str = Field(min_length=1, max_length=64)
    budget_tokens: int | None = None


class Metadata(Wire):
    user_id: str | None = Field(default=None, max_length=512)


class OutputFormat(Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Wire):
    format: OutputFormat | None = None
    effort: str | None = Field(default=None, max_length=16)
    """How hard a reasoning model thinks; the models served here have one effort, so it changes nothing."""


class CountTokensRequest(Wire):
    model: str = Field(min_length=1, max_length=256)
    messages: list[InputMessage] = Field(min_length=1, max_length=100_000)
    system: str | list[Block] | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=1_000_000)
    stop_sequences: list[str] | None = Field(default=None, max_length=64)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=1_000_000)
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    stream: bool = False


# -- answers (documentation of the wire format in /openapi.json; the handlers build plain dicts) -------
class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Answer):
    input_tokens: int
    """Input tokens not read from the engine's prompt cache (Anthropic's meaning)."""
    output_tokens: int
    cache_read_input_tokens: int = 0
    """Input tokens the engine reused from its prompt cache (billed at the cached-input price)."""
    cache_creation_input_tokens: int = 0
    cost: float = 0.0
    """What the request cost in USD (Yun's addition, as on the OpenAI routes)."""


class Message(_Answer):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[dict[str, Any]]
    model: str
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"] | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(_Answer):
    input_tokens: int
