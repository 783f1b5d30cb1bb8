"""What one request consumed, as the engine counted it. Metering and billing build on this record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Usage", "usage_from"]


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
    live_prompt: int = 0
    live_cached: int = 0
    live_completion: int = 0
    """The engine's running counts while streaming (llama.cpp `timings_per_token`, else chunks seen);
    what an aborted stream is billed for."""

    def see_timings(self, timings: Any) -> None:
        if isinstance(timings, dict):
            self.live_cached = int(timings.get("cache_n") or 0)
            self.live_prompt = int(timings.get("prompt_n") or 0) + self.live_cached
            self.live_completion = int(timings.get("predicted_n") or 0)

    def close_live(self) -> None:
        """Fold the running counts of an unfinished engine call into the totals."""
        self.prompt_tokens += self.live_prompt
        self.cached_tokens += self.live_cached
        self.completion_tokens += self.live_completion
        self.live_prompt = self.live_cached = self.live_completion = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        """Fold in an engine `usage` object (several, when one request fans out to several engine calls)."""
        if not isinstance(usage, dict):
            return
        self.counted_by_engine = True
        self.live_prompt = self.live_cached = self.live_completion = 0
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
