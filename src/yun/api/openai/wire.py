"""Shared pieces of the OpenAI wire format: strict about types, and about fields that change the output.

A field the wire models do not declare is never dropped silently when it could change the answer: it is
either harmless metadata (accepted and not forwarded, see `HARMLESS`) or refused with a 400 naming it, as
OpenAI itself refuses unrecognized arguments. llama.cpp's documented sampling extensions (`top_k`, `min_p`,
`grammar`, ...) are declared fields, passed through to engines that speak llama.cpp (`EXTENSIONS`); the
endpoints refuse them for other engines (api/openai/engine_check.py).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from yun.errors import InvalidRequest, UnsupportedParameter

__all__ = [
    "EXTENSIONS",
    "HARMLESS",
    "Stop",
    "StreamOptions",
    "Wire",
    "check_logit_bias",
    "log_ignored",
    "refuse_unknown",
]

log = logging.getLogger("yun.api")


class Wire(BaseModel):
    """Unknown fields are kept (`model_extra`) so `refuse_unknown` can name them, instead of pydantic's
    less helpful "extra fields not permitted"."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(Wire):
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)] | None

HARMLESS = frozenset(
    {
        "metadata",  # the client's own tags
        "store",  # OpenAI's stored completions; Yun stores none, the answer is the same
        "service_tier",
        "prompt_cache_key",  # a routing hint; llama.cpp caches prompts per slot anyway
        "prompt_cache_retention",
        "prediction",  # predicted outputs make OpenAI faster, never different
        "safety_identifier",
    }
)
"""OpenAI request fields that never change an answer: accepted and not forwarded."""


def refuse_unknown(request: BaseModel) -> None:
    """A 400 naming the first undeclared field that is not harmless metadata (null values are unset)."""
    extra = request.model_extra
    if not extra:
        return
    for name, value in extra.items():
        if value is None or name in HARMLESS or (name == "modalities" and value == ["text"]):
            continue
        if name == "lora":
            # The adapters a shared replica loads are other organizations' fine-tunes: only the gateway
            # selects one, for the fine-tuned model a request names.
            raise UnsupportedParameter(
                "lora is not accepted: call a fine-tuned model by its name (ft:...), and Yun applies its adapter",
                param=name,
            )
        raise UnsupportedParameter(
            f"Unrecognized request argument supplied: {name} (Yun never drops a parameter that could change "
            "the answer; see the README for the parameters it serves)",
            param=name,
        )


def log_ignored(request: BaseModel) -> None:
    """For APIs other than OpenAI's inference endpoints that choose to ignore unknown fields: say so."""
    extra = request.model_extra or {}
    if extra:
        log.info("ignoring unknown request fields: %s", ", ".join(sorted(extra)))


def check_logit_bias(value: dict[str, float] | None) -> None:
    for token, bias in (value or {}).items():
        if not token.isdigit():
            raise InvalidRequest(f"logit_bias keys must be token ids, got {token!r}", param="logit_bias")
        if not -100 <= bias <= 100:
            raise InvalidRequest("logit_bias values must be between -100 and 100", param="logit_bias")


Unit = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]


class LlamaCppSampling(Wire):
    """llama.cpp's documented sampling extensions (its server README, `/completion` options), served on
    chat and text completions by engines that speak llama.cpp and refused (400) by others."""

    top_k: Count | None = None
    min_p: Unit | None = None
    typical_p: Unit | None = None
    top_n_sigma: float | None = Field(default=None, ge=-1, le=100)
    repeat_penalty: Positive | None = None
    repeat_last_n: int | None = Field(default=None, ge=-1, le=1_000_000)
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_tau: Positive | None = None
    mirostat_eta: Unit | None = None
    dynatemp_range: Positive | None = None
    dynatemp_exponent: Positive | None = None
    dry_multiplier: Positive | None = None
    dry_base: Positive | None = None
    dry_allowed_length: Count | None = None
    dry_penalty_last_n: Count | None = None
    dry_sequence_breakers: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)] | None = None
    xtc_probability: Unit | None = None
    xtc_threshold: Unit | None = None
    min_keep: Count | None = None
    n_probs: int | None = Field(default=None, ge=0, le=20)
    post_sampling_probs: bool | None = None
    ignore_eos: bool | None = None
    samplers: str | Annotated[list[str], Field(max_length=16)] | None = None
    grammar: str | None = Field(default=None, max_length=100_000)
    json_schema: dict[str, Any] | None = None
    cache_prompt: bool | None = None
    n_keep: int | None = Field(default=None, ge=-1, le=1_000_000)
    n_indent: Count | None = None
    t_max_predict_ms: Count | None = None
    return_tokens: bool | None = None
    timings_per_token: bool | None = None


EXTENSIONS = frozenset(LlamaCppSampling.model_fields)
"""The llama.cpp extension fields, by their wire names."""

_STANDARD = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias")


class SamplingFields(LlamaCppSampling):
    """Sampling parameters common to chat and text completions."""

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    n_predict: int | None = Field(default=None, ge=-1, le=1_000_000)
    """llama.cpp's name for max_tokens (-1: no bound but the context's), served as max_tokens by every engine."""
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

    def output_bound(self, max_tokens: int | None) -> int | None:
        """The client's output bound: `max_tokens` (or chat's max_completion_tokens, given), else n_predict."""
        n = self.n_predict
        if n is None or "max_tokens" in self.model_fields_set or "max_completion_tokens" in self.model_fields_set:
            return max_tokens
        if n == 0:
            raise InvalidRequest("n_predict must be -1 (no bound) or at least 1", param="n_predict")
        return n if n > 0 else None

    def extensions(self) -> list[str]:
        """The llama.cpp extensions this request sets (usually none: one set intersection)."""
        return sorted(n for n in EXTENSIONS & self.model_fields_set if getattr(self, n) is not None)

    def sampling(self, extensions: list[str] | None = None) -> dict[str, Any]:
        """The sampling fields the engine gets: the standard ones set, and the llama.cpp `extensions` set
        (`extensions()`, computed here if not given). `n` is the gateway's (it fans out one engine
        request per choice, for exact usage)."""
        refuse_unknown(self)
        if extensions is None:
            extensions = self.extensions()
        check_logit_bias(self.logit_bias)
        out = {f: getattr(self, f) for f in _STANDARD if getattr(self, f) is not None}
        for name in extensions:
            out[name] = getattr(self, name)
        if self.n is not None and self.n > 1:
            out["n"] = self.n
        return out

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
