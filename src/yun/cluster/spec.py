"""What the cluster is asked to run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ReplicaSpec"]


@dataclass(frozen=True)
class ReplicaSpec:
    """One model deployment: either GGUF replicas Yun runs, or an external OpenAI-compatible URL."""

    model_id: str
    kind: Literal["chat", "embedding"]
    path: str | None = None
    url: str | None = field(default=None, repr=False)
    """An external server's address; it may carry credentials, so it is left out of repr (logs)."""
    api_key: str | None = field(default=None, repr=False)
    upstream_model: str | None = None
    """Model name to send upstream (external servers); llama.cpp replicas ignore it."""
    replicas: int = 1
    context_length: int | None = None
    """Tokens one request may use (prompt + output); None when an external server does not say."""
    dimensions: int | None = None
    """Embedding width, when known."""

    @property
    def external(self) -> bool:
        return self.url is not None
