"""Versioned rows (model prices, compute prices): each change is a new version, never an edit, so what was
charged at a version keeps it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.exc import IntegrityError

from yun.errors import InvalidRequest
from yun.store.db import Database

__all__ = ["add_version"]


def add_version(db: Database, table: Table, key_column: str, key: str, values: dict[str, Any]) -> tuple[int, datetime]:
    """Append the next version of `key` (a row of `values`, `version` and `created_at`); returns (version,
    created_at). Two writers adding at once both land: the one that lost the version number takes the next."""
    for _ in range(5):
        try:
            with db.engine.begin() as c:
                last = c.execute(select(func.max(table.c.version)).where(table.c[key_column] == key)).scalar()
                version, now = (last or 0) + 1, datetime.now(UTC)
                c.execute(insert(table).values({key_column: key, "version": version, "created_at": now, **values}))
                return version, now
        except IntegrityError:
            continue  # another writer took that version number; take the next
    raise InvalidRequest("could not record the price; retry")
