"""Wire models of POST /v1/completions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from yun.api.openai.wire import SamplingFields, Wire

__all__ = ["CompletionRequest"]

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class TextResponseFormat(Wire):
    """llama.cpp's extension on text completions: `{"type": "json_object", "schema": {...}}`."""

    type: Literal["text", "json_object"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class CompletionRequest(SamplingFields):
    # Several prompts may mix text and token ids, as llama.cpp takes them.
    prompt: str | TokenIds | Annotated[list[str | TokenIds], Field(min_length=1, max_length=64)]
    max_tokens: int | None = Field(default=16, ge=1, le=1_000_000)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=20)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: TextResponseFormat | None = None
