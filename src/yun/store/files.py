"""Uploaded files' metadata, per organization (the bytes are in the file store, jobs/files).

Every read and delete names the organization: another tenant's file id is simply not found, the same
answer as an id that never existed. `add` keeps an organization within its storage limit even when
several uploads finish at once: the check and the insert are one transaction that holds the
organization's row (SQLite takes its write lock at BEGIN; PostgreSQL locks the row).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select

from yun.errors import NotFound
from yun.store.db import Database
from yun.store.orm import OrganizationRow
from yun.store.orm_jobs import FileRow

__all__ = ["FilePage", "FileRepository", "OverLimit", "StoredFile"]

_T = cast(Table, FileRow.__table__)
_ORGS = cast(Table, OrganizationRow.__table__)


@dataclass(frozen=True)
class StoredFile:
    id: str
    org_id: str
    filename: str
    purpose: str
    bytes: int
    status: str
    storage_key: str
    created_at: datetime


@dataclass(frozen=True)
class FilePage:
    files: list[StoredFile]
    has_more: bool


class OverLimit(Exception):  # noqa: N818 (a refusal, not a failure)
    """The file would take its organization past its storage limit; `used` is what it holds already."""

    def __init__(self, used: int) -> None:
        super().__init__(used)
        self.used = used


def _usage(org_id: str) -> Any:
    return select(func.coalesce(func.sum(_T.c.bytes), 0)).where(_T.c.org_id == org_id)


def _record(row: Any) -> StoredFile:
    created = row.created_at
    if created.tzinfo is None:  # SQLite hands back naive datetimes; all are UTC
        created = created.replace(tzinfo=UTC)
    return StoredFile(
        id=row.id,
        org_id=row.org_id,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        status=row.status,
        storage_key=row.storage_key,
        created_at=created,
    )


class FileRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def usage(self, org_id: str) -> int:
        """The bytes of all the organization's files."""
        with self._db.reader.connect() as c:
            return int(c.execute(_usage(org_id)).scalar_one())

    def add(self, file: StoredFile, max_org_bytes: int) -> StoredFile:
        """Record a stored file, unless the organization would then hold more than `max_org_bytes`
        (OverLimit, with what it holds). `created_at` is set now, at the moment the file is complete."""
        done = replace(file, created_at=datetime.now(UTC))
        with self._db.engine.begin() as c:
            c.execute(select(_ORGS.c.id).where(_ORGS.c.id == file.org_id).with_for_update())
            used = int(c.execute(_usage(file.org_id)).scalar_one())
            if used + file.bytes > max_org_bytes:
                raise OverLimit(used)
            c.execute(insert(_T), [done.__dict__])
        return done

    def get(self, org_id: str, file_id: str) -> StoredFile | None:
        """The organization's file `file_id`, or None (also when another organization owns it)."""
        with self._db.reader.connect() as c:
            row = c.execute(select(_T).where(_T.c.id == file_id, _T.c.org_id == org_id)).first()
        return None if row is None else _record(row)

    def page(
        self,
        org_id: str,
        *,
        limit: int,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
        purpose: str | None = None,
    ) -> FilePage:
        """One page of the organization's files by creation time, starting after the file `after`
        (NotFound, param `after`, when the organization has no such file)."""
        query = select(_T).where(_T.c.org_id == org_id)
        if purpose is not None:
            query = query.where(_T.c.purpose == purpose)
        with self._db.reader.connect() as c:
            if after is not None:
                mark = c.execute(select(_T).where(_T.c.id == after, _T.c.org_id == org_id)).first()
                if mark is None:
                    raise NotFound(f"No file with id '{after}' to list after.", param="after")
                if order == "desc":
                    beyond = or_(
                        _T.c.created_at < mark.created_at, and_(_T.c.created_at == mark.created_at, _T.c.id < mark.id)
                    )
                else:
                    beyond = or_(
                        _T.c.created_at > mark.created_at, and_(_T.c.created_at == mark.created_at, _T.c.id > mark.id)
                    )
                query = query.where(beyond)
            if order == "desc":
                query = query.order_by(_T.c.created_at.desc(), _T.c.id.desc())
            else:
                query = query.order_by(_T.c.created_at.asc(), _T.c.id.asc())
            rows = c.execute(query.limit(limit + 1)).all()
        return FilePage([_record(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def delete(self, org_id: str, file_id: str) -> StoredFile | None:
        """Delete the organization's file record and return it (its storage key is the caller's to delete);
        None when the organization has no file by that id."""
        with self._db.engine.begin() as c:
            row = c.execute(select(_T).where(_T.c.id == file_id, _T.c.org_id == org_id)).first()
            if row is None:
                return None
            c.execute(delete(_T).where(_T.c.id == file_id, _T.c.org_id == org_id))
        return _record(row)
