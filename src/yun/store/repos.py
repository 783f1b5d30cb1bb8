"""Repositories: the only code that touches ORM rows. SQLAlchemy errors are translated here."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from yun.errors import InvalidRequest, NotFound
from yun.store.db import Database
from yun.store.orm import ApiKeyRow, MembershipRow, ModelRow, OrganizationRow, UserRow
from yun.store.records import ApiKeyRecord, MemberRecord, ModelRecord, OrganizationRecord

__all__ = ["KeyRepository", "MemberRepository", "ModelRepository", "OrganizationRepository"]


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything Yun stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _key(row: ApiKeyRow, org: OrganizationRow | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        prefix=row.prefix,
        is_platform_admin=row.is_platform_admin,
        created_at=_utc(row.created_at) or row.created_at,
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
        role=row.role,
        allowed_models=list(row.allowed_models) if row.allowed_models is not None else None,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        last_used_at=_utc(row.last_used_at),
        org_rpm_limit=None if org is None else org.rpm_limit,
        org_tpm_limit=None if org is None else org.tpm_limit,
    )


def _org(row: OrganizationRow) -> OrganizationRecord:
    return OrganizationRecord(row.id, row.name, _utc(row.created_at) or row.created_at, row.rpm_limit, row.tpm_limit)


def _model(row: ModelRow) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        kind=row.kind,
        source=row.source,
        path=row.path,
        url=row.url,
        upstream_model=row.upstream_model,
        upstream_key=row.upstream_key,
        replicas=row.replicas,
        card=dict(row.card or {}),
        created_at=_utc(row.created_at),
    )


class OrganizationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get_or_create(self, org_id: str, name: str) -> OrganizationRecord:
        with self._db.session() as s, s.begin():
            row = s.get(OrganizationRow, org_id)
            if row is None:
                row = OrganizationRow(id=org_id, name=name, created_at=datetime.now(UTC))
                s.add(row)
            return _org(row)

    def create(
        self, org_id: str, name: str, rpm_limit: int | None = None, tpm_limit: int | None = None
    ) -> OrganizationRecord:
        try:
            with self._db.session() as s, s.begin():
                row = OrganizationRow(
                    id=org_id, name=name, created_at=datetime.now(UTC), rpm_limit=rpm_limit, tpm_limit=tpm_limit
                )
                s.add(row)
                return _org(row)
        except IntegrityError as exc:
            raise InvalidRequest(f"an organization named {name!r} already exists", param="name") from exc

    def get(self, org_id: str) -> OrganizationRecord | None:
        with self._db.read_session() as s:
            row = s.get(OrganizationRow, org_id)
            return None if row is None else _org(row)

    def by_name(self, name: str) -> OrganizationRecord | None:
        """Names are unique (a second `create` with the same name is refused)."""
        with self._db.read_session() as s:
            row = s.scalars(select(OrganizationRow).where(OrganizationRow.name == name)).first()
            return None if row is None else _org(row)

    def list(self) -> list[OrganizationRecord]:
        with self._db.read_session() as s:
            return [_org(r) for r in s.scalars(select(OrganizationRow).order_by(OrganizationRow.created_at))]

    def set_limits(self, org_id: str, rpm_limit: int | None, tpm_limit: int | None) -> OrganizationRecord:
        with self._db.session() as s, s.begin():
            row = s.get(OrganizationRow, org_id)
            if row is None:
                raise NotFound(f"no organization {org_id!r}")
            row.rpm_limit, row.tpm_limit = rpm_limit, tpm_limit
            return _org(row)


class KeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, record: ApiKeyRecord, secret_hash: str) -> None:
        data = dataclasses.asdict(record)
        for derived in ("org_rpm_limit", "org_tpm_limit"):
            data.pop(derived)
        with self._db.session() as s, s.begin():
            s.add(ApiKeyRow(secret_hash=secret_hash, **data))

    def by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        """The key and its organization's limits, in one query (this runs on cache misses of auth)."""
        with self._db.read_session() as s:
            q = select(ApiKeyRow, OrganizationRow).join(OrganizationRow, OrganizationRow.id == ApiKeyRow.org_id)
            found = s.execute(q.where(ApiKeyRow.secret_hash == secret_hash)).first()
            return None if found is None else _key(found[0], found[1])

    def get(self, key_id: str) -> ApiKeyRecord | None:
        with self._db.read_session() as s:
            row = s.get(ApiKeyRow, key_id)
            return None if row is None else _key(row)

    def update(self, key_id: str, **changes: object) -> ApiKeyRecord:
        allowed = {"name", "allowed_models", "rpm_limit", "tpm_limit", "expires_at", "role"}
        with self._db.session() as s, s.begin():
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            for name, value in changes.items():
                if name not in allowed:
                    raise InvalidRequest(f"cannot change {name!r} of a key", param=name)
                setattr(row, name, value)
            return _key(row)

    def touch(self, last_used: dict[str, datetime]) -> None:
        """Record last-used times in one batch (written off the request path, at most every few seconds)."""
        with self._db.session() as s, s.begin():
            for key_id, when in last_used.items():
                row = s.get(ApiKeyRow, key_id)
                if row is not None:
                    row.last_used_at = when

    def list(self, org_id: str | None = None) -> list[ApiKeyRecord]:
        with self._db.read_session() as s:
            q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
            if org_id is not None:
                q = q.where(ApiKeyRow.org_id == org_id)
            return [_key(r) for r in s.scalars(q)]

    def count(self) -> int:
        return len(self.list())

    def revoke(self, key_id: str) -> ApiKeyRecord:
        with self._db.session() as s, s.begin():
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return _key(row)


class ModelRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def list(self) -> list[ModelRecord]:
        with self._db.read_session() as s:
            return [_model(r) for r in s.scalars(select(ModelRow).order_by(ModelRow.created_at))]

    def get(self, model_id: str) -> ModelRecord | None:
        with self._db.read_session() as s:
            row = s.get(ModelRow, model_id)
            return None if row is None else _model(row)

    def add(self, record: ModelRecord) -> ModelRecord:
        data = dataclasses.asdict(record)
        data["created_at"] = record.created_at or datetime.now(UTC)
        try:
            with self._db.session() as s, s.begin():
                s.add(ModelRow(**data))
        except IntegrityError as exc:
            raise InvalidRequest(f"a model named {record.id!r} already exists", param="id") from exc
        return dataclasses.replace(record, created_at=data["created_at"])

    def upsert(self, record: ModelRecord) -> ModelRecord:
        """Insert or refresh a model Yun itself provides (bundled ones are re-registered at each start)."""
        with self._db.session() as s, s.begin():
            row = s.get(ModelRow, record.id)
            if row is None:
                return self._insert(s, record)
            for name in ("kind", "source", "path", "url", "upstream_model", "upstream_key", "card"):
                setattr(row, name, getattr(record, name))
            return _model(row)

    @staticmethod
    def _insert(s: object, record: ModelRecord) -> ModelRecord:
        data = dataclasses.asdict(record)
        data["created_at"] = record.created_at or datetime.now(UTC)
        row = ModelRow(**data)
        s.add(row)  # type: ignore[attr-defined]
        return _model(row)

    def remove(self, model_id: str) -> None:
        with self._db.session() as s, s.begin():
            row = s.get(ModelRow, model_id)
            if row is None:
                raise NotFound(f"no model {model_id!r}")
            s.delete(row)


class MemberRepository:
    """People and their role in an organization (owner, admin, member, billing-viewer)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, org_id: str, email: str, name: str, role: str) -> MemberRecord:
        with self._db.session() as s, s.begin():
            user = s.scalars(select(UserRow).where(UserRow.email == email)).first()
            if user is None:
                user = UserRow(
                    id="user_" + uuid.uuid4().hex[:20],
                    email=email,
                    name=name,
                    is_platform_admin=False,
                    created_at=datetime.now(UTC),
                )
                s.add(user)
                s.flush()
            if s.get(MembershipRow, (user.id, org_id)) is not None:
                raise InvalidRequest(f"{email} is already a member", param="email")
            s.add(MembershipRow(user_id=user.id, org_id=org_id, role=role))
            return MemberRecord(user.id, org_id, user.email, user.name, role)

    def list(self, org_id: str) -> list[MemberRecord]:
        with self._db.read_session() as s:
            rows = s.execute(
                select(UserRow, MembershipRow)
                .join(MembershipRow, MembershipRow.user_id == UserRow.id)
                .where(MembershipRow.org_id == org_id)
                .order_by(UserRow.email)
            )
            return [MemberRecord(u.id, org_id, u.email, u.name, m.role) for u, m in rows]

    def set_role(self, org_id: str, user_id: str, role: str) -> None:
        with self._db.session() as s, s.begin():
            row = s.get(MembershipRow, (user_id, org_id))
            if row is None:
                raise NotFound(f"no member {user_id!r}")
            row.role = role

    def remove(self, org_id: str, user_id: str) -> None:
        with self._db.session() as s, s.begin():
            row = s.get(MembershipRow, (user_id, org_id))
            if row is None:
                raise NotFound(f"no member {user_id!r}")
            s.delete(row)
