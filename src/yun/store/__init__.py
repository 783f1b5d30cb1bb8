"""Persistence: SQLite (embedded default) and PostgreSQL behind one set of repositories."""

from yun.store.db import Database
from yun.store.migrate import upgrade
from yun.store.records import ApiKeyRecord, MemberRecord, ModelRecord, OrganizationRecord
from yun.store.repos import KeyRepository, MemberRepository, ModelRepository, OrganizationRepository

__all__ = [
    "ApiKeyRecord",
    "Database",
    "KeyRepository",
    "MemberRecord",
    "MemberRepository",
    "ModelRecord",
    "ModelRepository",
    "OrganizationRecord",
    "OrganizationRepository",
    "upgrade",
]
