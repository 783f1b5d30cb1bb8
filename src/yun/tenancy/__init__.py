"""Organizations and API keys."""

from yun.tenancy.keys import DEFAULT_ORG, KEY_PREFIX, IssuedKey, KeyService, Principal, hash_secret

__all__ = ["DEFAULT_ORG", "KEY_PREFIX", "IssuedKey", "KeyService", "Principal", "hash_secret"]
