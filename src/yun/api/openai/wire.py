"""Shared pieces of the OpenAI wire format: lenient about unknown fields, strict about types."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from yun.errors import InvalidRequest

__all__ = ["Stop", "StreamOptions", "Wire", "check_logit_bias", "log_ignored"]

log = logging.getLogger("yun.api")


class Wire(BaseModel):
    """OpenAI adds fields often; accept unknown ones (and say so in the log) rather than fail clients."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(Wire):
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)] | None


def log_ignored(request: BaseModel) -> None:
    extra = request.model_extra or {}
    if extra:
        log.info("ignoring unknown request fields: %s", ", ".join(sorted(extra)))


def check_logit_bias(value: dict[str, float] | None) -> None:
    for token, bias in (value or {}).items():
        if not token.isdigit():
            raise InvalidRequest(f"logit_bias keys must be token ids, got {token!r}", param="logit_bias")
        if not -100 <= bias <= 100:
            raise InvalidRequest("logit_bias values must be between -100 and 100", param="logit_bias")


class SamplingFields(Wire):
    """Sampling parameters common to chat and text completions."""

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: Stop = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=512)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def sampling(self) -> dict[str, Any]:
        if self.n not in (None, 1):
            raise InvalidRequest(
                "n > 1 is not supported: usage for several choices cannot be counted exactly by this engine; "
                "send separate requests",
                param="n",
                code="unsupported_parameter",
            )
        check_logit_bias(self.logit_bias)
        fields = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias")
        out = {f: getattr(self, f) for f in fields if getattr(self, f) is not None}
        return out

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
