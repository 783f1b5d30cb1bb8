"""Model catalog: registry, cards and sources (bundled packages, local files, the hub, external URLs)."""

from yun.catalog.registry import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, Catalog, ModelKind

__all__ = ["DEFAULT_CHAT_MODEL", "DEFAULT_EMBEDDING_MODEL", "Catalog", "ModelKind"]
