"""What one request consumed, as the engine counted it. Metering and billing build on this record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Live", "Usage", "usage_from"]


@dataclass(slots=True)
class Live:
    """The running counts of one unfinished engine stream (llama.cpp's `timings_per_token`, else chunks
    seen): what it is billed for if it never reports its usage (the client left, the engine failed)."""

    prompt: int = 0
    cached: int = 0
    completion: int = 0


@dataclass
class Usage:
    request_id: str
    endpoint: str
    model_id: str
    replica: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    status: str = "ok"
    latency_s: float = 0.0
    ttft_s: float | None = None
    counted_by_engine: bool = False
    cost: int = 0
    """Nanodollars charged, once settled."""
    live: list[Live] = field(default_factory=list)
    """Each engine stream's running counts until it reports its usage; a request streaming `n` choices
    runs n streams at once, and each one's count is its own (one shared count would bill only the
    stream that reported last)."""

    def stream(self) -> Live:
        """The running counts of one more engine stream of this request."""
        live = Live()
        self.live.append(live)
        return live

    def see_timings(self, timings: Any, live: Live | None = None) -> None:
        """A stream's running counts, from llama.cpp's `timings` (`live`: which stream; the first if None)."""
        if isinstance(timings, dict):
            if live is None:
                live = self.live[0] if self.live else self.stream()
            live.cached = int(timings.get("cache_n") or 0)
            live.prompt = int(timings.get("prompt_n") or 0) + live.cached
            live.completion = int(timings.get("predicted_n") or 0)

    def live_counts(self) -> tuple[int, int, int]:
        """(prompt, completion, cached) tokens counted so far, finished and unfinished engine calls."""
        prompt, completion, cached = self.prompt_tokens, self.completion_tokens, self.cached_tokens
        for live in self.live:
            prompt += live.prompt
            completion += live.completion
            cached += live.cached
        return prompt, completion, cached

    def close_live(self) -> None:
        """Fold the running counts of unfinished engine calls into the totals."""
        self.prompt_tokens, self.completion_tokens, self.cached_tokens = self.live_counts()
        self.live.clear()

    def add(self, usage: dict[str, Any] | None, live: Live | None = None) -> None:
        """Fold in an engine `usage` object (several, when one request fans out to several engine calls).
        It replaces the running count of its stream (`live`; the first if None), which it includes."""
        if not isinstance(usage, dict):
            return
        self.counted_by_engine = True
        if live is None and self.live:
            live = self.live[0]
        if live is not None:
            live.prompt = live.cached = live.completion = 0
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            self.cached_tokens += int(details.get("cached_tokens") or 0)

    def as_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            # What this request cost in USD, as OpenRouter reports it.
            "cost": self.cost / 1_000_000_000,
        }


def usage_from(data: dict[str, Any]) -> dict[str, Any] | None:
    value = data.get("usage")
    return value if isinstance(value, dict) else None
