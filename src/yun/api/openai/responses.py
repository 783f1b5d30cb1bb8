"""What the inference endpoints answer, as documented in /openapi.json.

The handlers relay the engine's JSON (normalized by the gateway) without re-validating it, so these
models are the documentation of the wire format, not a filter: they list the fields OpenAI's clients
read, and allow more.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ChatCompletion", "Completion", "CreateEmbeddingResponse", "EVENT_STREAM", "Usage"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Answer):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class AssistantMessage(_Answer):
    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_Answer):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_Answer):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(_Answer):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class Completion(_Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Embedding(_Answer):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a base64 string with encoding_format="base64"


class CreateEmbeddingResponse(_Answer):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


# With "stream": true the answer is server-sent events: `data: {chunk}` lines, then `data: [DONE]`.
EVENT_STREAM: dict[str, Any] = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "description": 'With "stream": true: `data: <chunk JSON>` events, then `data: [DONE]`.',
    }
}
