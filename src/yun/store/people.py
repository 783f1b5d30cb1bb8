"""People who sign in to the console: their password hashes, lockouts, and server-side sessions.

Only hashes are stored: an argon2id hash of each password (made in `tenancy/`, never seen here in the
clear) and the SHA-256 of each session token. Nothing here returns a user id to an organization's API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from yun.errors import InvalidRequest, NotFound
from yun.store.db import Database
from yun.store.orm import ConsoleSessionRow, MembershipRow, OrganizationRow, UserRow

__all__ = ["AccountRepository", "Credentials", "SessionRecord", "new_user"]


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything Yun stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Credentials:
    user_id: str
    email: str
    password_hash: str | None
    locked_until: datetime | None


@dataclass(frozen=True)
class SessionRecord:
    """A live session and whom it acts as: a user with their current role in `org_id` (read from the
    membership on every lookup, so a changed role or a removed member takes effect at once), or the
    platform-admin key `key_id`."""

    id: str
    csrf_token: str
    expires_at: datetime
    user_id: str | None
    email: str | None
    org_id: str | None
    role: str | None
    key_id: str | None


def new_user(s: Session, email: str) -> UserRow:
    """A person of that email, added in the session `s` (flushed: its id is usable at once)."""
    user = UserRow(
        id="user_" + uuid.uuid4().hex[:20], email=email, name="", is_platform_admin=False, created_at=datetime.now(UTC)
    )
    s.add(user)
    s.flush()
    return user


class AccountRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- people --------------------------------------------------------------------------------
    def credentials(self, email: str) -> Credentials | None:
        with self._db.read_session() as s:
            row = s.scalars(select(UserRow).where(UserRow.email == email)).first()
            if row is None:
                return None
            return Credentials(row.id, row.email, row.password_hash, _utc(row.locked_until))

    def create_user(self, org_id: str, email: str, role: str, password_hash: str) -> str:
        """A person with a password and a membership of `org_id` (returns the membership id). A person
        who already has a password is refused: their password is theirs (`set_password` resets it)."""
        try:
            with self._db.session() as s, s.begin():
                user = s.scalars(select(UserRow).where(UserRow.email == email)).first()
                if user is not None and user.password_hash is not None:
                    raise InvalidRequest(
                        f"{email} already has a password: add them to another organization as a member, "
                        "or set a new password for them",
                        param="email",
                    )
                if user is None:
                    user = new_user(s, email)
                user.password_hash = password_hash
                if s.get(MembershipRow, (user.id, org_id)) is None:
                    s.add(MembershipRow(user_id=user.id, org_id=org_id, role=role, id="mem_" + uuid.uuid4().hex[:20]))
                else:
                    s.get_one(MembershipRow, (user.id, org_id)).role = role
                return user.id
        except IntegrityError as exc:  # the same email created twice at once
            raise InvalidRequest(f"{email} already exists", param="email") from exc

    def set_password(self, email: str, password_hash: str) -> str:
        """Replace a person's password hash, clear any lockout and end every session of theirs (whoever
        held the old password is signed out). Returns the user id."""
        with self._db.session() as s, s.begin():
            user = s.scalars(select(UserRow).where(UserRow.email == email)).first()
            if user is None:
                raise NotFound(f"no user {email!r}", param="email")
            user.password_hash = password_hash
            user.failed_logins = 0
            user.locked_until = None
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.user_id == user.id))
            return user.id

    def memberships(self, user_id: str) -> list[tuple[str, str, str]]:
        """(org id, org name, role) of each organization the person is in, by organization name."""
        with self._db.read_session() as s:
            rows = s.execute(
                select(OrganizationRow.id, OrganizationRow.name, MembershipRow.role)
                .join(MembershipRow, MembershipRow.org_id == OrganizationRow.id)
                .where(MembershipRow.user_id == user_id)
                .order_by(OrganizationRow.name)
            )
            return [(org_id, name, role) for org_id, name, role in rows]

    def record_failure(self, user_id: str, max_failures: int, lock_for: timedelta) -> None:
        """Count a failed sign-in; the `max_failures`-th in a row locks the account for `lock_for` (the
        count starts again after it). One UPDATE, so concurrent failures are all counted."""
        with self._db.session() as s, s.begin():
            s.execute(update(UserRow).where(UserRow.id == user_id).values(failed_logins=UserRow.failed_logins + 1))
            row = s.get_one(UserRow, user_id)
            if row.failed_logins >= max_failures:
                row.failed_logins = 0
                row.locked_until = datetime.now(UTC) + lock_for

    def record_success(self, user_id: str) -> None:
        with self._db.session() as s, s.begin():
            s.execute(update(UserRow).where(UserRow.id == user_id).values(failed_logins=0, locked_until=None))

    # -- sessions ------------------------------------------------------------------------------
    def add_session(
        self,
        token_hash: str,
        csrf_token: str,
        expires_at: datetime,
        *,
        user_id: str | None = None,
        org_id: str | None = None,
        key_id: str | None = None,
    ) -> str:
        session_id = "sess_" + uuid.uuid4().hex[:24]
        with self._db.session() as s, s.begin():
            now = datetime.now(UTC)
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now))
            s.add(
                ConsoleSessionRow(
                    id=session_id,
                    token_hash=token_hash,
                    csrf_token=csrf_token,
                    user_id=user_id,
                    org_id=org_id,
                    key_id=key_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return session_id

    def session(self, token_hash: str) -> SessionRecord | None:
        """The live session with this token hash, or None (unknown, expired, or its member was removed)."""
        with self._db.read_session() as s:
            row = s.scalars(select(ConsoleSessionRow).where(ConsoleSessionRow.token_hash == token_hash)).first()
            expires_at = None if row is None else _utc(row.expires_at)
            if row is None or expires_at is None or expires_at <= datetime.now(UTC):
                return None
            email = role = None
            if row.user_id is not None:
                found = s.execute(
                    select(UserRow.email, MembershipRow.role)
                    .join(MembershipRow, MembershipRow.user_id == UserRow.id)
                    .where(UserRow.id == row.user_id, MembershipRow.org_id == row.org_id)
                ).first()
                if found is None:
                    return None
                email, role = found
            return SessionRecord(row.id, row.csrf_token, expires_at, row.user_id, email, row.org_id, role, row.key_id)

    def delete_session(self, token_hash: str) -> None:
        with self._db.session() as s, s.begin():
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.token_hash == token_hash))

    def password_hash_of(self, user_id: str) -> str | None:
        with self._db.read_session() as s:
            row = s.get(UserRow, user_id)
            return None if row is None else row.password_hash

    def change_password(self, user_id: str, password_hash: str, keep_session: str) -> None:
        """A signed-in person's new password: their other sessions end, this one stays."""
        with self._db.session() as s, s.begin():
            s.get_one(UserRow, user_id).password_hash = password_hash
            s.execute(
                delete(ConsoleSessionRow).where(
                    ConsoleSessionRow.user_id == user_id, ConsoleSessionRow.id != keep_session
                )
            )
