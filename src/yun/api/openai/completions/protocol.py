"""Wire models of POST /v1/completions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from yun.api.openai.wire import SamplingFields

__all__ = ["CompletionRequest"]

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=64)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=64)]
    )
    max_tokens: int | None = Field(default=16, ge=1, le=1_000_000)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=20)
    logprobs: int | None = Field(default=None, ge=0, le=5)
