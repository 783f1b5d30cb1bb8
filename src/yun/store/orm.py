"""Tables. ORM rows never leave `store/`: repositories return the plain records in `records.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKeyRow",
    "BalanceRow",
    "Base",
    "ComputePriceRow",
    "ConsoleSessionRow",
    "InvitationRow",
    "ComputeUsageRow",
    "DeploymentRow",
    "FreeAllowanceRow",
    "FreeUsageRow",
    "GatewayInstanceRow",
    "GatewayLoadRow",
    "LedgerRow",
    "MembershipRow",
    "ModelRow",
    "OrganizationRow",
    "PriceRow",
    "ReplicaRow",
    "ReservationRow",
    "ResponseRow",
    "RollupRow",
    "TrainingComputeRow",
    "UsageRow",
    "UserRow",
]


class Base(DeclarativeBase):
    pass


class OrganizationRow(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1"))
    """Its share of a busy model's slots against other organizations' (cluster/fair.py)."""


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Unused since 0007 (an organization's name for a person is on its membership); left for old rows.
    name: Mapped[str] = mapped_column(String(200))
    is_platform_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The console's sign-in (0015): an argon2id hash (never the password); null: cannot sign in.
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Failed sign-ins since the last success or lockout; `locked_until` refuses every attempt until then.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConsoleSessionRow(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's token is kept (it has 256 bits of entropy, as
    API keys do); the CSRF token is not a credential on its own (it is useless without the cookie), so it
    is kept as it is, to be written into the pages. A session acts as a user in one of its organizations,
    or as the platform-admin key it was opened with (`key_id`)."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    org_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class InvitationRow(Base):
    """An invitation to an organization (0017): only the SHA-256 of its link's token is kept; single use
    (`used_at`) and expiring."""

    __tablename__ = "invitations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20))
    invited_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MembershipRow(Base):
    """A person in one organization, with what that organization says about them. The API names a
    member by `id`, never by the global user id, so two organizations cannot tell they share a person."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("id", name="uq_memberships_id"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))  # owner | admin | member | billing-viewer
    id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The secret itself is never stored: only its SHA-256 (keys carry 256 bits of entropy, so a fast
    # hash cannot be brute-forced) and a short visible prefix for people to tell keys apart.
    prefix: Mapped[str] = mapped_column(String(20))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_platform_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # chat | embedding
    source: Mapped[str] = mapped_column(String(20))  # bundled | local | hub | external
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    upstream_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    upstream_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    owner_org: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """A fine-tuned model belongs to one organization (no other sees or calls it); None: everyone's."""
    base_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    adapter: Mapped[str | None] = mapped_column(Text, nullable=True)
    """A LoRA adapter file served on `base_model`'s replicas (per-request selection)."""


# -- money ---------------------------------------------------------------------------------------
# Amounts are integers in nanodollars (1e-9 USD): exact sums, no float drift, and int64 holds $9.2e9.


class PriceRow(Base):
    """One version of a model's price. Versions are only ever added, so past charges keep theirs."""

    __tablename__ = "prices"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    input_per_mtok: Mapped[int] = mapped_column(BigInteger)  # nanodollars per 1M tokens
    output_per_mtok: Mapped[int] = mapped_column(BigInteger)
    cached_input_per_mtok: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    training_per_mtok: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Per 1M trained tokens (tokens of the training file x epochs); None: not for sale."""


class BalanceRow(Base):
    """Denormalised balance: always equal to the sum of the org's ledger entries (same transaction)."""

    __tablename__ = "balances"

    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerRow(Base):
    """Append-only. `reference` makes each posting idempotent per kind (a request is charged once)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("org_id", "kind", "reference"),
        Index("ix_ledger_org_created", "org_id", "created_at", "kind", "amount"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[str] = mapped_column(String(20))  # grant | topup | charge | refund | adjustment
    amount: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(80))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReservationRow(Base):
    """The durable hold written before the engine runs; settled exactly once (by the request or at recovery)."""

    __tablename__ = "reservations"
    # Recovery reads open holds only: a partial index stays small however many requests were settled.
    __table_args__ = (
        Index(
            "ix_reservations_open",
            "gateway_id",
            "created_at",
            sqlite_where=text("settled_at IS NULL"),
            postgresql_where=text("settled_at IS NULL"),
        ),
    )

    request_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    model_id: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    free_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    free_month: Mapped[str | None] = mapped_column(String(7), nullable=True)
    price_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gateway_id: Mapped[str] = mapped_column(String(200))
    """The gateway instance (`gateway_instances.id`) whose request this is; before migration 0006, a name."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Tokens generated so far by a stream still running, recorded now and then by the gateway: what crash
    # recovery bills if the gateway dies before settling. The server default fills them for the hold's own
    # INSERT, which does not name them.
    progress_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    progress_completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    progress_cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class UsageRow(Base):
    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_org_created", "org_id", "created_at"),)

    request_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    model_id: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(40))
    replica: Mapped[str] = mapped_column(String(240))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    free_tokens: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    latency_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    price_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    compute_seconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """Replica-seconds of a dedicated deployment this record bills (endpoint `compute`); 0 for requests."""
    training_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """Tokens a fine-tuning job trained on, which this record bills (endpoint `fine_tuning`); 0 otherwise."""


class RollupRow(Base):
    """Per org, model and UTC day: kept in step with usage_records in the settling transaction, so usage
    and spend queries read a few hundred rows instead of millions."""

    __tablename__ = "usage_rollups"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    free_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    input_cost: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_cost: Mapped[int] = mapped_column(BigInteger, default=0)
    output_cost: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    compute_seconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    compute_cost: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """Dedicated deployments' replica-seconds and what they cost (already in `cost`, which is every charge)."""
    training_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    training_cost: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """Fine-tuning jobs' trained tokens and what they cost (in `cost` too, never in the input columns)."""


class FreeAllowanceRow(Base):
    """Monthly free tokens per model; org_id '*' is the default for every organization."""

    __tablename__ = "free_allowances"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    monthly_tokens: Mapped[int] = mapped_column(BigInteger)


class FreeUsageRow(Base):
    __tablename__ = "free_usage"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM (UTC)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)


class GatewayInstanceRow(Base):
    """One running `yun serve` process and its lease. Holds it takes carry its id
    (`reservations.gateway_id`); they are settled by recovery only once `expires_at` has passed."""

    __tablename__ = "gateway_instances"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- compute: deployments and the replica registry ---------------------------------------------------


class DeploymentRow(Base):
    """A model running on Yun's compute: how many replicas, of what shape, for whom. Written by the admin
    API; the active controller makes the replicas match it (`replicas` below is what it made)."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(200), index=True)
    engine: Mapped[str] = mapped_column(String(20), default="llamacpp")  # llamacpp | vllm
    owner_org: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)  # None: shared
    min_replicas: Mapped[int] = mapped_column(Integer, default=1)
    max_replicas: Mapped[int] = mapped_column(Integer, default=1)
    desired_replicas: Mapped[int] = mapped_column(Integer, default=1)
    """Set by `scale` and by the autoscaler, always within [min, max]."""
    cpus: Mapped[float] = mapped_column(Float, default=1.0)
    gpus: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    threads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    context: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Engine arguments per replica; None: the installation's defaults (`YUN_ENGINE__*`)."""
    command: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    autoscale: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idle_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by every update that changes how replicas run: the controller rolls replicas of older
    generations over to new ones (new ready before old drained)."""
    state: Mapped[str] = mapped_column(String(20), default="active")  # active | deleting
    message: Mapped[str] = mapped_column(Text, default="")
    """Why it is not running as asked (failed replicas, no credit), for its owner and operators."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReplicaRow(Base):
    """The replica registry: every replica the controller placed, where it answers, and its engine's
    secret (sealed like other secrets). Gateways route from it; compute is metered from its times."""

    __tablename__ = "replicas"
    __table_args__ = (Index("ix_replicas_deployment_state", "deployment_id", "state"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(80))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    backend: Mapped[str] = mapped_column(String(20))  # local | ray
    shape: Mapped[str] = mapped_column(String(80))
    node: Mapped[str] = mapped_column(String(255), default="")
    endpoint: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))  # starting | ready | restarting | draining | failed | stopped
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    adapters: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """LoRA adapter files its engine loaded, in order (llama.cpp's adapter ids 0, 1, ...)."""


class ComputeUsageRow(Base):
    """One closed interval of one replica's life: the compute it held from `started_at` to `ended_at`
    (whole UTC seconds, never across a UTC midnight), with the deployment, owner and model it served then.
    Written once per (replica, start) by the compute meter (metering/compute.py): a replica's intervals
    follow each other without gap or overlap, from its `created_at` to its `stopped_at`."""

    __tablename__ = "compute_usage"
    __table_args__ = (
        UniqueConstraint("replica_id", "started_at", name="uq_compute_usage_replica_start"),
        Index("ix_compute_usage_day", "day"),
        # An organization's dedicated compute per deployment (`/v1/organization/deployments`), off the index.
        Index("ix_compute_usage_owner", "owner_org", "deployment_id"),
        # Which stopped replicas are metered to their end: a small index (one entry per replica).
        Index("ix_compute_usage_final", "replica_id", sqlite_where=text("final"), postgresql_where=text("final")),
        # What the compute biller has left to charge: dedicated intervals not billed yet.
        Index(
            "ix_compute_usage_unbilled",
            "deployment_id",
            sqlite_where=text("charge_ref IS NULL AND owner_org IS NOT NULL"),
            postgresql_where=text("charge_ref IS NULL AND owner_org IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    replica_id: Mapped[str] = mapped_column(String(80))
    deployment_id: Mapped[str] = mapped_column(String(80))
    owner_org: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The deployment's owner when metered; None: a shared deployment (the operator's cost)."""
    model_id: Mapped[str] = mapped_column(String(200))
    shape: Mapped[str] = mapped_column(String(80))
    node: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC) of the whole interval
    seconds: Mapped[int] = mapped_column(BigInteger)
    final: Mapped[bool] = mapped_column(Boolean)
    """The replica's last interval: it ends at its `stopped_at`."""
    price_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The shape's compute price version it was priced at when metered; None: the shape had no price."""
    cost: Mapped[int] = mapped_column(BigInteger)
    """What it cost the operator (nanodollars, the version's cost price)."""
    price: Mapped[int] = mapped_column(BigInteger)
    """What its owner pays for it (nanodollars, the version's dedicated price); 0 for shared compute."""
    charge_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    """The compute hold (`reservations.request_id`) whose settlement charged it, in the same transaction;
    None: not billed yet (or shared compute, which nobody is billed for)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrainingComputeRow(Base):
    """The compute one run of a fine-tuning job held, per UTC day it ran on: what it cost the operator at its
    shape's cost price when recorded. Written once per run (unique on job, run and day) when the run ends,
    whichever way; the org pays for training by trained tokens, not by these seconds."""

    __tablename__ = "training_compute"
    __table_args__ = (
        UniqueConstraint("job_id", "run", "day", name="uq_training_compute_job_run_day"),
        Index("ix_training_compute_day", "day"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40))
    run: Mapped[int] = mapped_column(Integer)
    """The job's attempt number (1 for its first run, 2 once resumed, ...)."""
    org_id: Mapped[str] = mapped_column(String(40))
    model_id: Mapped[str] = mapped_column(String(200))
    """The base model the job fine-tunes."""
    shape: Mapped[str] = mapped_column(String(80))
    cpus: Mapped[float] = mapped_column(Float)
    gpus: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC) of the whole piece
    seconds: Mapped[int] = mapped_column(BigInteger)
    """Wall seconds the trainer held its shape (priced per shape-hour like a replica)."""
    price_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost: Mapped[int] = mapped_column(BigInteger)
    """What it cost the operator (nanodollars, the version's cost price)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ComputePriceRow(Base):
    """One version of a resource shape's two compute prices, in nanodollars per replica-hour: what a
    replica of the shape costs the operator, and what an organization pays for one of its dedicated
    deployment. Versions are only ever added, so intervals priced earlier keep theirs."""

    __tablename__ = "compute_prices"
    __table_args__ = (UniqueConstraint("shape", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    shape: Mapped[str] = mapped_column(String(80), index=True)
    version: Mapped[int] = mapped_column(Integer)
    cost_per_hour: Mapped[int] = mapped_column(BigInteger)
    price_per_hour: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GatewayLoadRow(Base):
    """The load one gateway has on one deployment (requests queued and in flight there), as it last
    published it; read by the controller's autoscaler when there is no Redis. A row exists only while the
    load is not zero, and counts only until `expires_at`: a gateway that died stops counting by itself."""

    __tablename__ = "gateway_loads"

    gateway_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    queued: Mapped[int] = mapped_column(Integer)
    in_flight: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ResponseRow(Base):
    """A stored answer of the Responses API (`store: true`): its own input items and the response object
    as the client got it, readable and deletable by its organization only. A response names the one it
    continued (`previous_response_id`); the conversation it continued is read by following those links."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_org_created", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    previous_response_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    model_id: Mapped[str] = mapped_column(String(200))
    input_items: Mapped[list[Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# The jobs' tables (files, fine-tuning) are in orm_jobs.py; imported here so Base.metadata holds them.
from yun.store import orm_jobs as _orm_jobs  # noqa: E402, F401
