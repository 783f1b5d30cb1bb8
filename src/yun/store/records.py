"""Plain records the store hands upward (no SQLAlchemy objects leave `store/`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ApiKeyRecord",
    "DeploymentRecord",
    "MemberRecord",
    "ModelRecord",
    "OrganizationRecord",
    "ReplicaRecord",
]


@dataclass(frozen=True)
class OrganizationRecord:
    id: str
    name: str
    created_at: datetime
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    weight: float = 1.0


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
    owner_org: str | None = None
    """A fine-tuned model belongs to one organization; None: every organization's."""
    base_model: str | None = None
    """A fine-tuned model: the model whose replicas serve it, with `adapter`."""
    adapter: str | None = None
    """A fine-tuned model's LoRA adapter file (GGUF), selected per request on the base model's replicas."""


@dataclass(frozen=True)
class MemberRecord:
    """A person as one organization knows them: `id` and `name` are that organization's own."""

    id: str
    org_id: str
    email: str
    name: str
    role: str


@dataclass(frozen=True)
class DeploymentRecord:
    """What an operator asked to run: a model on Yun's compute, shared or dedicated to `owner_org`.
    The controller makes replicas match it; `generation` tells it which replicas run an older spec."""

    id: str
    model_id: str
    engine: str
    owner_org: str | None
    """None: shared by every organization."""
    min_replicas: int
    max_replicas: int
    desired_replicas: int
    cpus: float
    gpus: float
    memory_mb: int
    threads: int | None
    parallel: int | None
    context: int | None
    """Engine arguments per replica; None: the installation's defaults (`YUN_ENGINE__*`)."""
    command: tuple[str, ...] | None
    autoscale: dict[str, Any]
    idle_timeout_s: float | None
    generation: int
    state: str
    """`active`, or `deleting` (the controller stops its replicas, then removes it)."""
    message: str
    created_at: datetime
    updated_at: datetime
    """The last change of what was asked (spec, scale, state); the controller's `message` does not move it."""


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica of the registry as operators see it. Holds no engine secret: the query that reads it
    does not even select that column."""

    id: str
    deployment_id: str
    generation: int
    backend: str
    shape: str
    node: str
    endpoint: str | None
    state: str
    error: str | None
    restarts: int
    created_at: datetime
    ready_at: datetime | None
    stopped_at: datetime | None
