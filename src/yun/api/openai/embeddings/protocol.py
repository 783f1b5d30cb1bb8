"""Wire models of POST /v1/embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from yun.api.openai.wire import Wire

__all__ = ["EmbeddingRequest"]

Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class EmbeddingRequest(Wire):
    model: str = Field(min_length=1, max_length=256)
    input: (
        Text
        | TokenIds
        # Several inputs may mix text and token ids, as llama.cpp takes them.
        | Annotated[list[Text | TokenIds], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=512)
