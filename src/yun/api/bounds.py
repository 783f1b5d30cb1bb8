"""Bounds of every number, date and string the HTTP API accepts, as `Annotated` types for wire models
and query/path parameters.

Each bound is the smaller of what the store can hold (INTEGER columns are 32-bit on PostgreSQL, money
columns 64-bit nanodollars everywhere) and what a sane business needs, so out-of-range input is a 400
naming the field instead of a database error (a 500, or on SQLite an integer silently turned into a
float). The money domain checks its own limits again (`store/money/`): these only give the client a
clear answer early.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field

from yun.billing.pricing import NANO
from yun.catalog.registry import MAX_CONTEXT
from yun.metering.usage import MAX_PAGE
from yun.store.compute import MAX_PRICE_PER_HOUR
from yun.store.money import MAX_FREE_TOKENS, MAX_PRICE_PER_MTOK

__all__ = [
    "DAY_MAX",
    "DAY_MIN",
    "MAX_CREDIT_USD",
    "MAX_FREE_TOKENS",
    "MAX_PRICE_USD",
    "MAX_RPM",
    "MAX_TPM",
    "MAX_PAGE",
    "MAX_REPLICAS",
    "Command",
    "ContextTokens",
    "Cpus",
    "ComputePriceUSD",
    "CreditUSD",
    "Cursor",
    "Day",
    "Email",
    "FreeTokens",
    "FutureInstant",
    "Gpus",
    "IdleSeconds",
    "Identifier",
    "Instant",
    "MemoryMb",
    "Month",
    "Name",
    "Note",
    "PageLimit",
    "PriceUSD",
    "ReplicaCount",
    "Rpm",
    "Slots",
    "Shape",
    "Text",
    "Threads",
    "Tpm",
    "no_nul",
]

INT32_MAX = 2**31 - 1

MAX_RPM = 10_000_000
"""Requests per minute of one key or org (stored as a 32-bit INTEGER)."""
MAX_TPM = INT32_MAX
"""Tokens per minute of one key or org (stored as a 32-bit INTEGER)."""
MAX_CREDIT_USD = Decimal(1_000_000_000)
"""Largest single credit or debit, in USD ($1e9 = 1e18 nanodollars; a balance holds at most ~$9.2e9)."""
MAX_PRICE_USD = Decimal(MAX_PRICE_PER_MTOK) / NANO
"""Largest price per 1M tokens, in USD (the money store's own limit)."""
MAX_REPLICAS = 1000
"""Replicas of one deployment (min, max, desired)."""
DAY_MIN = date(2000, 1, 1)
"""Earliest day a usage query or statement may name (before Yun existed: simply empty)."""
DAY_MAX = date(2199, 12, 31)
"""Latest day a usage query or statement may name."""


def no_nul(value: str) -> str:
    """Refuse NUL characters: PostgreSQL cannot store them in text, and no name or id needs one."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""Any string the API stores or looks up: no NUL."""
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul)]
Identifier = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul)]
"""An id in a path or query (org, key, user, model); longer ones exist nowhere."""
Email = Annotated[
    str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), AfterValidator(no_nul)
]
Note = Annotated[str, Field(max_length=500), AfterValidator(no_nul)]
Rpm = Annotated[int, Field(ge=1, le=MAX_RPM)]
Tpm = Annotated[int, Field(ge=1, le=MAX_TPM)]
FairWeight = Annotated[
    float,
    Field(ge=0.01, le=100, allow_inf_nan=False, description="share of a busy model's slots; 1 is the default"),
]
FreeTokens = Annotated[int, Field(ge=0, le=MAX_FREE_TOKENS)]
CreditUSD = Annotated[
    Decimal, Field(ge=-MAX_CREDIT_USD, le=MAX_CREDIT_USD, allow_inf_nan=False, description="USD, as a number or string")
]
PriceUSD = Annotated[
    Decimal, Field(ge=0, le=MAX_PRICE_USD, allow_inf_nan=False, description="USD per 1M tokens, number or string")
]
ComputePriceUSD = Annotated[
    Decimal,
    Field(
        ge=0,
        le=Decimal(MAX_PRICE_PER_HOUR) / NANO,
        allow_inf_nan=False,
        description="USD per replica-hour, number or string",
    ),
]
Shape = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,79}$", examples=["cpu1", "cpu8-gpu1-mem32768"])]
"""A resource shape's name, as deployments' replicas are metered by (`cpu1`, `cpu8-gpu1-mem32768`)."""
PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE)]
"""How many items one page of a list holds."""
Cursor = Annotated[str, Field(min_length=1, max_length=80), AfterValidator(no_nul)]
"""The id of the last item of the previous page (`after=`)."""
Day = Annotated[date, Field(ge=DAY_MIN, le=DAY_MAX)]
"""A UTC day (YYYY-MM-DD)."""


def _sane_instant(value: datetime) -> datetime:
    # Far from datetime's own limits, so converting to UTC (an offset of up to a day) cannot overflow.
    if not DAY_MIN <= value.date() <= DAY_MAX:
        raise ValueError(f"must be between {DAY_MIN.isoformat()} and {DAY_MAX.isoformat()}")
    return value


Instant = Annotated[datetime, AfterValidator(_sane_instant)]
"""A moment (ISO 8601) between DAY_MIN and DAY_MAX."""


def _sane_month(value: str) -> str:
    if not DAY_MIN.year <= int(value[:4]) <= DAY_MAX.year:
        raise ValueError(f"the year must be between {DAY_MIN.year} and {DAY_MAX.year}")
    return value


Month = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"]), AfterValidator(_sane_month)]
"""A UTC calendar month, YYYY-MM."""


def _future(value: datetime) -> datetime:
    when = _sane_instant(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if when <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return when


FutureInstant = Annotated[datetime, AfterValidator(_future)]
"""A moment after now and before DAY_MAX (UTC when no offset is given): a key's expiry."""


# -- deployments: replicas and what each one takes ------------------------------------------------
ReplicaCount = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
Cpus = Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False, description="CPUs per replica (fractions allowed)")]
Gpus = Annotated[float, Field(ge=0, le=64, allow_inf_nan=False, description="GPUs per replica (fractions allowed)")]
MemoryMb = Annotated[int, Field(ge=0, le=INT32_MAX, description="Memory per replica in MiB; 0: not reserved")]
Threads = Annotated[int, Field(ge=1, le=1024, description="Engine threads per replica")]
Slots = Annotated[int, Field(ge=1, le=1024, description="Requests one replica runs at once")]
ContextTokens = Annotated[int, Field(ge=16, le=MAX_CONTEXT, description="Tokens per slot (prompt + output)")]
IdleSeconds = Annotated[
    float, Field(gt=0, le=30 * 86400, allow_inf_nan=False, description="Seconds without requests before scaling to 0")
]
Command = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(no_nul)]],
    Field(min_length=1, max_length=256),
]
"""An engine command line, one argument per item."""
