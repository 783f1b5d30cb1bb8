"""Wire models of the admin and organization APIs: strict (unknown fields are errors)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yun.api.bounds import (
    Command,
    ComputePriceUSD,
    ContextTokens,
    Cpus,
    CreditUSD,
    Email,
    FairWeight,
    FreeTokens,
    FutureInstant,
    Gpus,
    Identifier,
    IdleSeconds,
    Instant,
    MemoryMb,
    Name,
    Note,
    PriceUSD,
    ReplicaCount,
    Rpm,
    Slots,
    Text,
    Threads,
    Tpm,
)
from yun.store import MemberRecord

__all__ = [
    "AdminKeyIn",
    "ComputePriceIn",
    "AutoscaleIn",
    "ModelIn",
    "CreditIn",
    "DeploymentDetail",
    "DeploymentIn",
    "DeploymentList",
    "DeploymentOut",
    "DeploymentUpdate",
    "FreeAllowanceIn",
    "InvitationIn",
    "KeyIn",
    "KeyOut",
    "LimitsIn",
    "MemberIn",
    "MemberRoleIn",
    "OrgIn",
    "OrgOut",
    "PriceIn",
    "ReplicaOut",
    "ScaleIn",
    "key_out",
    "member_out",
]

Role = Literal["owner", "admin", "member", "billing-viewer"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgIn(Strict):
    name: Name
    rpm_limit: Rpm | None = None
    tpm_limit: Tpm | None = None


class LimitsIn(Strict):
    rpm_limit: Rpm | None = None
    tpm_limit: Tpm | None = None


class WeightIn(Strict):
    weight: FairWeight


class OrgOut(Strict):
    id: str
    name: str
    created_at: datetime
    rpm_limit: int | None
    tpm_limit: int | None
    weight: float = Field(description="its share of a busy model's slots against other organizations' (default 1)")


class CreditIn(Strict):
    amount: CreditUSD = Field(description="USD; negative only for kind=adjustment")
    kind: Literal["grant", "topup", "refund", "adjustment"] = "grant"
    reference: Text | None = Field(
        default=None, min_length=1, max_length=80, description="Idempotency key: the same reference is posted once"
    )
    note: Note | None = None


class PriceIn(Strict):
    input: PriceUSD = Field(description="USD per 1M input tokens")
    output: PriceUSD = Field(description="USD per 1M output tokens")
    cached_input: PriceUSD | None = Field(default=None, description="USD per 1M cached input tokens")
    training: PriceUSD | None = Field(
        default=None, description="USD per 1M trained tokens (fine-tuning) [default: unchanged; none: free]"
    )


class ComputePriceIn(Strict):
    cost: ComputePriceUSD | None = Field(
        default=None, description="USD per replica-hour the compute costs the operator [default: unchanged]"
    )
    price: ComputePriceUSD | None = Field(
        default=None,
        description="USD per replica-hour an org pays for its dedicated deployment [default: unchanged]",
    )


class FreeAllowanceIn(Strict):
    model: Identifier
    monthly_tokens: FreeTokens
    org_id: Identifier = Field(default="*", description="'*' = every organization")


class KeyIn(Strict):
    name: Name
    role: Role = "member"
    allowed_models: list[Identifier] | None = Field(default=None, max_length=256)
    rpm_limit: Rpm | None = None
    tpm_limit: Tpm | None = None
    expires_at: Instant | None = None


class KeyOut(Strict):
    id: str
    org_id: str
    name: str
    prefix: str
    role: str
    allowed_models: list[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    secret: str | None = Field(default=None, description="Only in the answer that created the key")


class MemberIn(Strict):
    email: Email
    name: Text = Field(default="", max_length=200)
    role: Role = "member"


class MemberRoleIn(Strict):
    role: Role


class InvitationIn(Strict):
    email: Email
    role: Role = "member"


def key_out(record: Any, secret: str | None = None) -> KeyOut:
    return KeyOut(
        id=record.id,
        org_id=record.org_id,
        name=record.name,
        prefix=record.prefix,
        role=record.role,
        allowed_models=record.allowed_models,
        rpm_limit=record.rpm_limit,
        tpm_limit=record.tpm_limit,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        last_used_at=record.last_used_at,
        secret=secret,
    )


def member_out(m: MemberRecord) -> dict[str, Any]:
    """A member as the calling organization knows them: its own member id and name, never the person's
    global user id (which would let organizations tell they share a person)."""
    return {"id": m.id, "object": "organization.member", "email": m.email, "name": m.name, "role": m.role}


# -- admin-only bodies (the CLI is a client of these) -------------------------------------------
class AdminKeyIn(KeyIn):
    """A key minted by a platform admin for any organization."""

    platform_admin: bool = Field(default=False, description="A platform-admin key (manages every org)")
    expires_at: FutureInstant | None = None


class ModelIn(Strict):
    """Register a model: exactly one of `file`, `hub` (with `hub_file`) or `url`."""

    id: Identifier = Field(max_length=128, description="The name clients put in `model`")
    kind: Literal["chat", "embedding"] = "chat"
    file: Text | None = Field(
        default=None, min_length=1, max_length=4096, description="Path of a GGUF file on the server's machine"
    )
    hub: Text | None = Field(default=None, min_length=1, max_length=200, description="Hugging Face repo id")
    hub_file: Text | None = Field(default=None, min_length=1, max_length=500, description="GGUF file in the repo")
    url: Text | None = Field(
        default=None, min_length=1, max_length=2000, description="Base URL of an OpenAI-compatible server"
    )
    upstream_model: Text | None = Field(default=None, min_length=1, max_length=200)
    api_key: Text | None = Field(default=None, min_length=1, max_length=4096, description="Stored, never shown")
    license: Text | None = Field(default=None, max_length=200)
    context: int | None = Field(
        default=None,
        description="Tokens per request (prompt + output) for this model; default engine.context_per_slot",
    )


# -- deployments ------------------------------------------------------------------------------
Engine = Literal["llamacpp", "vllm"]
_DEFAULTED = "; null: the installation's default (YUN_ENGINE__*)"


class AutoscaleIn(Strict):
    """Autoscaling between min and max from the requests queued and in flight over every gateway ({}: none,
    the replica count stays as set). Scaling to zero is `idle_timeout_s`'s (with min 0), not this policy's."""

    target_in_flight: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        allow_inf_nan=False,
        description="Requests (queued + in flight) per replica; default: its slots (parallel)",
    )
    up_after_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds the load must ask for more replicas before scaling up (default 5)",
    )
    down_after_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="Seconds the load must ask for fewer replicas before scaling down (default 60)",
    )


class DeploymentUpdate(Strict):
    """What PATCH may change (replica counts go through `/scale`); a field left out keeps its value and
    null puts it back to its default. A change to anything but `autoscale` and `idle_timeout_s` starts a
    new generation: the controller replaces the replicas (new ready before old drained)."""

    engine: Engine | None = Field(default=None, description="llamacpp (CPU) or vllm (GPU); null: llamacpp")
    cpus: Cpus | None = Field(default=None, description="CPUs per replica; null: 1")
    gpus: Gpus | None = Field(default=None, description="GPUs per replica; null: 0")
    memory_mb: MemoryMb | None = Field(default=None, description="MiB per replica; null: 0 (not reserved)")
    threads: Threads | None = Field(default=None, description="Engine threads per replica" + _DEFAULTED)
    parallel: Slots | None = Field(default=None, description="Requests one replica runs at once" + _DEFAULTED)
    context: ContextTokens | None = Field(default=None, description="Tokens per slot" + _DEFAULTED)
    command: Command | None = Field(
        default=None,
        description="Engine command replacing the default one; {host}, {port} and {model} are filled in, "
        "the secret is in the environment (YUN_ENGINE_SECRET)",
    )
    idle_timeout_s: IdleSeconds | None = Field(
        default=None, description="With min 0, scale to zero after this long with no request; null: never"
    )
    autoscale: AutoscaleIn | None = Field(default=None, description="Autoscaling policy; null or {}: none")


class DeploymentIn(DeploymentUpdate):
    """A new deployment of a model of the catalog, shared or dedicated to one organization."""

    model: Identifier = Field(description="A local model of the catalog (not an external one)")
    id: Text | None = Field(
        default=None, min_length=1, max_length=80, description="Deployment id [default: dep-<random>]"
    )
    owner: Identifier | None = Field(default=None, description="Organization id or name; null: shared by every org")
    replicas: ReplicaCount | None = Field(default=None, description="Desired replicas [default: 1, within min..max]")
    min: ReplicaCount | None = Field(default=None, description="Fewest replicas [default: 1, or 0 for replicas=0]")
    max: ReplicaCount | None = Field(default=None, description="Most replicas [default: max(min, replicas, 1)]")


class ScaleIn(Strict):
    """The desired replica count, its bounds, or both; new bounds alone clamp the count into them."""

    replicas: ReplicaCount | None = None
    min: ReplicaCount | None = None
    max: ReplicaCount | None = None


class ReplicaOut(Strict):
    """One replica from the registry. The engine's secret is never part of it."""

    id: str
    state: str = Field(description="starting, ready, restarting, draining or failed")
    generation: int
    node: str
    endpoint: str | None
    backend: str
    shape: str
    restarts: int
    error: str | None = Field(description="The last failure (for failed replicas: why)")
    created_at: datetime
    ready_at: datetime | None


class DeploymentOut(Strict):
    id: str
    object: Literal["deployment"] = "deployment"
    model: str
    engine: str
    owner: str | None = Field(description="The organization it is dedicated to; null: shared")
    min: int
    max: int
    desired: int
    ready: int = Field(description="Replicas ready now")
    cpus: float
    gpus: float
    memory_mb: int
    shape: str = Field(description="Resource shape compute is metered and priced by, e.g. cpu1")
    threads: int | None
    parallel: int | None
    context: int | None
    command: list[str] | None
    idle_timeout_s: float | None
    autoscale: dict[str, Any] = Field(description="Autoscaling policy as set ({}: none)")
    generation: int
    state: str = Field(description="active, or deleting (its replicas are being stopped)")
    message: str = Field(description="Why it is not running as asked; empty when it is")
    created_at: datetime
    updated_at: datetime


class DeploymentDetail(DeploymentOut):
    replicas: list[ReplicaOut] = Field(description="Its replicas that have not stopped, failed ones included")


class DeploymentList(Strict):
    object: Literal["list"] = "list"
    data: list[DeploymentOut]


Password = Annotated[str, Field(min_length=8, max_length=1024)]
"""A console password (never logged, never stored: only its argon2id hash)."""


class UserIn(Strict):
    """A person who signs in to the console with a password, as a member of one organization."""

    email: Email
    org: Identifier = Field(description="Organization id or name")
    role: Literal["owner", "admin", "member", "billing-viewer"] = "member"
    password: Password


class PasswordIn(Strict):
    password: Password


class PasswordChangeIn(Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=1024)]
    new_password: Password
