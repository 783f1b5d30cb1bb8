"""Persistence: SQLite (embedded default) and PostgreSQL behind one set of repositories."""

from yun.store.db import Database
from yun.store.deployments import DeploymentRepository
from yun.store.instances import InstanceRecord, InstanceRepository, new_instance_id
from yun.store.migrate import setup_lock, upgrade
from yun.store.records import (
    ApiKeyRecord,
    DeploymentRecord,
    MemberRecord,
    ModelRecord,
    OrganizationRecord,
    ReplicaRecord,
)
from yun.store.repos import KeyRepository, MemberRepository, ModelRepository, OrganizationRepository

__all__ = [
    "ApiKeyRecord",
    "Database",
    "DeploymentRecord",
    "DeploymentRepository",
    "InstanceRecord",
    "InstanceRepository",
    "KeyRepository",
    "MemberRecord",
    "MemberRepository",
    "ModelRecord",
    "ModelRepository",
    "OrganizationRecord",
    "ReplicaRecord",
    "new_instance_id",
    "setup_lock",
    "OrganizationRepository",
    "upgrade",
]
