"""Wire models of POST /v1/responses (OpenAI's Responses API).

Input items stay plain JSON here: `translate.py` reads them one by one, so that an item we cannot serve
is refused with a message and a `param` naming it (`input.3.content.0`), not a union's error dump.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from yun.api.openai.wire import Wire

__all__ = ["ResponseCreateRequest", "ResponsesTool", "TextConfig", "TextFormat"]


class ResponsesTool(Wire):
    """A tool as the Responses API declares it: flat (`name` beside `type`), not chat's `function` object.
    Only `function` tools are served; the rest (web_search, file_search, ...) are refused by name."""

    type: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, min_length=1, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(Wire):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class NamedFunction(Wire):
    type: str
    name: str | None = None


class ResponseCreateRequest(Wire):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[ResponsesTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    # OpenAI refuses fewer than 16 output tokens with this same 400.
    max_output_tokens: int | None = Field(default=None, ge=16, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, str] | None = None
    store: bool = True
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=80)
    stream: bool = False
    user: str | None = Field(default=None, max_length=512)
    # Accepted for the values that change nothing here; anything else is refused in translate.py.
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tool_calls: int | None = Field(default=None, ge=1)
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512.
        if value is None:
            return None
        if len(value) > 16:
            raise ValueError("metadata may hold at most 16 key-value pairs")
        for k, v in value.items():
            if len(k) > 64 or len(v) > 512:
                raise ValueError("metadata keys are at most 64 characters and values at most 512")
        return value
