"""What a model serves, as opposed to what its file says: the context a request may use, and the card
that tells tenants and operators about it.

A GGUF records the context its model was trained with (32,768 for Qwen2.5-Coder); a replica runs each
request in a slot of `context_per_slot` tokens (4,096 by default), and that is the limit a request
meets. Cards state the served figure as `context_length`, the file's as `trained_context_length`.
"""

from __future__ import annotations

from typing import Any

from yun.store import ModelRecord

__all__ = ["EMBEDDING_CONTEXT", "SERVED_CONTEXT_KEY", "served_card", "served_context"]

EMBEDDING_CONTEXT = 512
"""Tokens an embedding replica takes in one input when the operator does not say (one physical batch)."""

SERVED_CONTEXT_KEY = "served_context"
"""Card key of the operator's per-model context (`yun models add --context N`), over the global setting."""


def served_context(m: ModelRecord, context_per_slot: int) -> int | None:
    """Tokens one request to `m` may use (prompt + output). None for an external model whose context
    the operator did not give (the upstream decides)."""
    if m.source == "external":
        declared = m.card.get("context_length")
        return int(declared) if declared else None
    chosen = m.card.get(SERVED_CONTEXT_KEY)
    if chosen:
        return int(chosen)
    if m.kind == "embedding":
        trained = m.card.get("context_length")
        return min(EMBEDDING_CONTEXT, int(trained)) if trained else EMBEDDING_CONTEXT
    return context_per_slot


def served_card(m: ModelRecord, context_per_slot: int) -> dict[str, Any]:
    """The card as shown: `context_length` is what a request gets; the file's own figure is kept as
    `trained_context_length` (local models only)."""
    card = {k: v for k, v in m.card.items() if k != SERVED_CONTEXT_KEY}
    if m.source != "external":
        card["trained_context_length"] = m.card.get("context_length")
    card["context_length"] = served_context(m, context_per_slot)
    return card
