"""Plain records the store hands upward (no SQLAlchemy objects leave `store/`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["ApiKeyRecord", "MemberRecord", "ModelRecord", "OrganizationRecord"]


@dataclass(frozen=True)
class OrganizationRecord:
    id: str
    name: str
    created_at: datetime
    rpm_limit: int | None = None
    tpm_limit: int | None = None


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    org_id: str
    name: str
    prefix: str
    is_platform_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    role: str = "member"
    allowed_models: list[str] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    last_used_at: datetime | None = None
    org_rpm_limit: int | None = None
    org_tpm_limit: int | None = None


@dataclass(frozen=True)
class ModelRecord:
    id: str
    kind: str
    source: str
    path: str | None = None
    url: str | None = None
    upstream_model: str | None = None
    upstream_key: str | None = None
    replicas: int = 1
    card: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class MemberRecord:
    """A person as one organization knows them: `id` and `name` are that organization's own."""

    id: str
    org_id: str
    email: str
    name: str
    role: str
