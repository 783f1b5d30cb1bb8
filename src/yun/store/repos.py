"""Repositories: the only code that touches ORM rows. SQLAlchemy errors are translated here."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from yun.errors import InvalidRequest, NotFound
from yun.store.db import Database
from yun.store.orm import ApiKeyRow, MembershipRow, ModelRow, OrganizationRow, UserRow
from yun.store.people import new_user
from yun.store.records import ApiKeyRecord, MemberRecord, ModelRecord, OrganizationRecord
from yun.store.secrets import SecretBox, is_sealed

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
    return OrganizationRecord(
        row.id, row.name, _utc(row.created_at) or row.created_at, row.rpm_limit, row.tpm_limit, row.weight
    )


def _model(row: ModelRow, box: SecretBox) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        kind=row.kind,
        source=row.source,
        path=row.path,
        url=box.open(row.url),
        upstream_model=row.upstream_model,
        upstream_key=box.open(row.upstream_key),
        replicas=row.replicas,
        card=dict(row.card or {}),
        created_at=_utc(row.created_at),
        owner_org=row.owner_org,
        base_model=row.base_model,
        adapter=row.adapter,
    )


class OrganizationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get_or_create(self, org_id: str, name: str) -> OrganizationRecord:
        with self._db.session() as s, s.begin():
            row = s.get(OrganizationRow, org_id)
            if row is None:
                row = OrganizationRow(id=org_id, name=name, created_at=datetime.now(UTC), weight=1.0)
                s.add(row)
            return _org(row)

    def create(
        self, org_id: str, name: str, rpm_limit: int | None = None, tpm_limit: int | None = None
    ) -> OrganizationRecord:
        try:
            with self._db.session() as s, s.begin():
                row = OrganizationRow(
                    id=org_id,
                    name=name,
                    created_at=datetime.now(UTC),
                    rpm_limit=rpm_limit,
                    tpm_limit=tpm_limit,
                    weight=1.0,
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

    def set_weight(self, org_id: str, weight: float) -> OrganizationRecord:
        with self._db.session() as s, s.begin():
            row = s.get(OrganizationRow, org_id)
            if row is None:
                raise NotFound(f"no organization {org_id!r}")
            row.weight = weight
            return _org(row)

    def weights(self) -> dict[str, float]:
        """The organizations whose weight is not the default 1 (few): what gateways' fair queues need."""
        with self._db.read_session() as s:
            rows = s.execute(select(OrganizationRow.id, OrganizationRow.weight).where(OrganizationRow.weight != 1))
            return {org_id: weight for org_id, weight in rows}


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
        """How many keys exist, read in a write transaction (BEGIN IMMEDIATE on SQLite): the bootstrap
        decides on it whether to mint the first admin key, so it must see every commit before it, never
        a reader's older snapshot."""
        with self._db.session() as s, s.begin():
            return int(s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        with self._db.session() as s, s.begin():
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return _key(row)


def _carries_secret(url: str) -> bool:
    if is_sealed(url):
        return True
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None or bool(parts.query)


class ModelRepository:
    """Models, with their upstream secrets sealed at rest: `upstream_key` always, and `url` when it
    carries credentials (`user:password@` or a query string). Records going up hold them in clear."""

    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._box = secrets

    def _sealed(self, record: ModelRecord) -> dict[str, object]:
        data = dataclasses.asdict(record)
        data["upstream_key"] = self._box.seal(record.upstream_key)
        if record.url is not None and _carries_secret(record.url):
            data["url"] = self._box.seal(record.url)
        return data

    def list(self) -> list[ModelRecord]:
        with self._db.read_session() as s:
            return [_model(r, self._box) for r in s.scalars(select(ModelRow).order_by(ModelRow.created_at))]

    def get(self, model_id: str) -> ModelRecord | None:
        with self._db.read_session() as s:
            row = s.get(ModelRow, model_id)
            return None if row is None else _model(row, self._box)

    def add(self, record: ModelRecord) -> ModelRecord:
        created = record.created_at or datetime.now(UTC)
        try:
            with self._db.session() as s, s.begin():
                s.add(ModelRow(**{**self._sealed(record), "created_at": created}))
        except IntegrityError as exc:
            raise InvalidRequest(f"a model named {record.id!r} already exists", param="id") from exc
        return dataclasses.replace(record, created_at=created)

    def upsert(self, record: ModelRecord) -> ModelRecord:
        """Insert or refresh a model Yun itself provides (bundled ones are re-registered at each start)."""
        data = self._sealed(record)
        with self._db.session() as s, s.begin():
            row = s.get(ModelRow, record.id)
            if row is None:
                row = ModelRow(**{**data, "created_at": record.created_at or datetime.now(UTC)})
                s.add(row)
            else:
                for name in ("kind", "source", "path", "url", "upstream_model", "upstream_key", "card"):
                    setattr(row, name, data[name])
            s.flush()
            return _model(row, self._box)

    def set_replicas(self, model_id: str, replicas: int) -> None:
        """How many replicas the model's default deployment gets (0: none; it stays undeployed)."""
        with self._db.session() as s, s.begin():
            row = s.get(ModelRow, model_id)
            if row is None:
                raise NotFound(f"no model {model_id!r}")
            row.replicas = replicas

    def seal_plaintext(self) -> int:
        """Encrypt secrets written before encryption existed (run at start); returns the rows rewritten.
        Also opens every sealed secret once, so a wrong key fails here, at start, with a clear error."""
        rewritten = 0
        with self._db.session() as s, s.begin():
            for row in s.scalars(
                select(ModelRow).where(ModelRow.upstream_key.is_not(None) | ModelRow.url.is_not(None))
            ):
                record = _model(row, self._box)  # raises SecretKeyError for a wrong key
                data = self._sealed(record)
                if (data["url"], data["upstream_key"]) != (row.url, row.upstream_key):
                    row.url, row.upstream_key = data["url"], data["upstream_key"]  # type: ignore[assignment]
                    rewritten += 1
        return rewritten

    def remove(self, model_id: str) -> None:
        with self._db.session() as s, s.begin():
            row = s.get(ModelRow, model_id)
            if row is None:
                raise NotFound(f"no model {model_id!r}")
            s.delete(row)


class MemberRepository:
    """People and their role in an organization (owner, admin, member, billing-viewer).

    A person is one `users` row per email (so one person can be in several organizations), but all an
    organization stores or reads about them is on its own membership: its name for them and the member
    id it names them by. Nothing here returns a user id or another organization's data.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, org_id: str, email: str, name: str, role: str) -> MemberRecord:
        try:
            with self._db.session() as s, s.begin():
                user = s.scalars(select(UserRow).where(UserRow.email == email)).first()
                if user is None:
                    user = new_user(s, email)
                if s.get(MembershipRow, (user.id, org_id)) is not None:
                    raise InvalidRequest(f"{email} is already a member", param="email")
                member = MembershipRow(
                    user_id=user.id, org_id=org_id, role=role, id="mem_" + uuid.uuid4().hex[:20], name=name
                )
                s.add(member)
                return MemberRecord(member.id, org_id, email, name, role)
        except IntegrityError as exc:  # the same email added twice at once
            raise InvalidRequest(f"{email} is already a member", param="email") from exc

    def list(self, org_id: str) -> list[MemberRecord]:
        with self._db.read_session() as s:
            rows = s.execute(
                select(UserRow.email, MembershipRow)
                .join(MembershipRow, MembershipRow.user_id == UserRow.id)
                .where(MembershipRow.org_id == org_id)
                .order_by(UserRow.email)
            )
            return [MemberRecord(m.id, org_id, email, m.name, m.role) for email, m in rows]

    def _membership(self, s: Session, org_id: str, member_id: str) -> MembershipRow:
        row = s.scalars(
            select(MembershipRow).where(MembershipRow.org_id == org_id, MembershipRow.id == member_id)
        ).first()
        if row is None:
            raise NotFound(f"no member {member_id!r}")
        return row

    def set_role(self, org_id: str, member_id: str, role: str) -> None:
        with self._db.session() as s, s.begin():
            self._membership(s, org_id, member_id).role = role

    def remove(self, org_id: str, member_id: str) -> None:
        with self._db.session() as s, s.begin():
            s.delete(self._membership(s, org_id, member_id))
