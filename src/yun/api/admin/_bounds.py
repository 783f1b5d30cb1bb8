"""Bounds of the admin API's numbers and days: what the store holds and what a sane business allows.

The same values as the tenant-data helper's `api/bounds.py` (one of the two goes at merge).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["FIRST_DAY", "LAST_DAY", "MAX_INT32", "Day", "FutureInstant", "RateLimit"]

MAX_INT32 = 2**31 - 1
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)

RateLimit = Annotated[int, Field(ge=1, le=MAX_INT32)]
Day = Annotated[date, Field(ge=FIRST_DAY, le=LAST_DAY)]


def _future(value: datetime) -> datetime:
    when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if when <= datetime.now(UTC):
        raise ValueError("must be in the future")
    if when.date() > LAST_DAY:
        raise ValueError(f"must be on or before {LAST_DAY.isoformat()}")
    return when


FutureInstant = Annotated[datetime, AfterValidator(_future)]
"""A moment after now and before 2101 (UTC when no offset is given)."""
