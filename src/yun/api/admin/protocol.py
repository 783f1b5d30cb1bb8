"""Wire models of the admin and organization APIs: strict (unknown fields are errors)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yun.api.bounds import (
    ComputePriceUSD,
    CreditUSD,
    Email,
    FreeTokens,
    FutureInstant,
    Identifier,
    Instant,
    Name,
    Note,
    PriceUSD,
    Rpm,
    Text,
    Tpm,
)
from yun.store import MemberRecord

__all__ = [
    "AdminKeyIn",
    "ComputePriceIn",
    "ModelIn",
    "CreditIn",
    "FreeAllowanceIn",
    "KeyIn",
    "KeyOut",
    "LimitsIn",
    "MemberIn",
    "OrgIn",
    "OrgOut",
    "PriceIn",
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


class OrgOut(Strict):
    id: str
    name: str
    created_at: datetime
    rpm_limit: int | None
    tpm_limit: int | None


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
