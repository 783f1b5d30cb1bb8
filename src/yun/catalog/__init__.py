"""Model catalog: registry, cards and sources (bundled packages, local files, the hub, external URLs)."""

from yun.catalog.cards import served_card, served_context
from yun.catalog.registry import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, Catalog, ModelKind

__all__ = ["DEFAULT_CHAT_MODEL", "DEFAULT_EMBEDDING_MODEL", "Catalog", "ModelKind", "served_card", "served_context"]
