"""API keys: minted once, shown once, stored only as a hash, verified through a short-lived cache."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from yun.errors import AuthenticationFailed
from yun.store import ApiKeyRecord, KeyRepository

__all__ = ["DEFAULT_ORG", "KEY_PREFIX", "IssuedKey", "KeyService", "Principal", "hash_secret"]

KEY_PREFIX = "yun-"
DEFAULT_ORG = "org-default"
_SECRET_LEN = 43  # token_urlsafe(32)
# A revocation clears this gateway's cache at once; other gateways see it within this TTL.
_CACHE_TTL_S = 1.0
_NEGATIVE_CACHE_MAX = 10_000


def _digest(secret: str | None) -> str:
    if not secret:
        raise AuthenticationFailed("You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.")
    if not secret.startswith(KEY_PREFIX) or len(secret) != len(KEY_PREFIX) + _SECRET_LEN:
        raise AuthenticationFailed("Incorrect API key provided.")
    return hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the API key on every request."""

    key_id: str
    org_id: str
    is_platform_admin: bool
    role: str = "member"
    allowed_models: frozenset[str] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    org_rpm_limit: int | None = None
    org_tpm_limit: int | None = None


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKeyRecord
    secret: str
    """The only time the secret exists outside the caller's hands."""


class KeyService:
    """Issues and verifies API keys.

    Verification is on every request's path, so positive results are cached for a few seconds;
    the cache holds hashes, never secrets.
    """

    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}
        self._used: dict[str, datetime] = {}

    @property
    def repo(self) -> KeyRepository:
        return self._keys

    def flush_last_used(self) -> int:
        """Write last-used times gathered since the previous flush (one batch, off the request path)."""
        used, self._used = self._used, {}
        if used:
            self._keys.touch(used)
        return len(used)

    def forget_cache(self) -> None:
        """Drop cached lookups (after a revocation or a limit change, so it takes effect at once)."""
        self._cache.clear()

    def issue(
        self,
        org_id: str,
        name: str,
        *,
        platform_admin: bool = False,
        role: str = "member",
        allowed_models: list[str] | None = None,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            id="key_" + uuid.uuid4().hex[:24],
            org_id=org_id,
            name=name,
            prefix=secret[: len(KEY_PREFIX) + 6],
            is_platform_admin=platform_admin,
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            revoked_at=None,
            role="owner" if platform_admin else role,
            allowed_models=allowed_models,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
        )
        self._keys.add(record, hash_secret(secret))
        return IssuedKey(record=record, secret=secret)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        record = self._keys.revoke(key_id)
        self.forget_cache()
        return record

    def verify(self, secret: str | None) -> Principal:
        """Resolve a presented secret to a principal, or raise AuthenticationFailed (blocking on a cache
        miss: off the event loop; there, `verified`)."""
        digest = _digest(secret)
        record = self._cached(digest)
        return self._principal(record if record is not None else self._lookup(digest))

    async def verified(self, secret: str | None) -> Principal:
        """`verify` for the event loop: a cached key costs no thread hop; a miss reads the database in a
        worker thread, never on the loop."""
        digest = _digest(secret)
        record = self._cached(digest)
        return self._principal(record if record is not None else await asyncio.to_thread(self._lookup, digest))

    def principal_of(self, key_id: str) -> Principal:
        """The principal of the key with this id (a console session opened with it acts as it), or
        AuthenticationFailed if it is gone, revoked or expired. Blocking: a database read."""
        record = self._keys.get(key_id)
        if record is None:
            raise AuthenticationFailed("This API key no longer exists.")
        return self._principal(record)

    def _cached(self, digest: str) -> ApiKeyRecord | None:
        hit = self._cache.get(digest)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _lookup(self, digest: str) -> ApiKeyRecord:
        found = self._keys.by_hash(digest)
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        if len(self._cache) > _NEGATIVE_CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + _CACHE_TTL_S, found)
        return found

    def _principal(self, record: ApiKeyRecord) -> Principal:
        if record.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked.")
        now_utc = datetime.now(UTC)
        if record.expires_at is not None and record.expires_at <= now_utc:
            raise AuthenticationFailed("This API key has expired.")
        self._used[record.id] = now_utc
        return Principal(
            key_id=record.id,
            org_id=record.org_id,
            is_platform_admin=record.is_platform_admin,
            role=record.role,
            allowed_models=None if record.allowed_models is None else frozenset(record.allowed_models),
            rpm_limit=record.rpm_limit,
            tpm_limit=record.tpm_limit,
            org_rpm_limit=record.org_rpm_limit,
            org_tpm_limit=record.org_tpm_limit,
        )
