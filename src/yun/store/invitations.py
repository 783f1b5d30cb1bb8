"""Invitations to an organization: single-use, expiring links, stored only as the SHA-256 of their token.

Using one is one transaction: the row is claimed (`used_at` set only where it is still unused and
unexpired, so two browsers racing on one link cannot both get in), the person is made (or found), given
their password hash if they have none (only if they are in no other organization: the link's holder
chooses that password), and made a member with the invitation's role (an existing member keeps theirs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from yun.errors import InvalidRequest
from yun.store.db import Database
from yun.store.orm import InvitationRow, MembershipRow, OrganizationRow, UserRow
from yun.store.people import new_user

__all__ = ["InvitationRecord", "InvitationRepository"]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class InvitationRecord:
    id: str
    org_id: str
    org_name: str
    email: str
    role: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    has_password: bool
    """Whether the invited email already belongs to someone who signs in (they keep their password)."""

    @property
    def usable(self) -> bool:
        return self.used_at is None and self.expires_at > datetime.now(UTC)


class InvitationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self, token_hash: str, org_id: str, email: str, role: str, expires_at: datetime, invited_by: str | None
    ) -> InvitationRecord:
        """A new invitation; refused for someone who is already a member of the organization."""
        with self._db.session() as s, s.begin():
            member = s.scalar(
                select(MembershipRow.id)
                .join(UserRow, UserRow.id == MembershipRow.user_id)
                .where(UserRow.email == email, MembershipRow.org_id == org_id)
            )
            if member is not None:
                raise InvalidRequest(f"{email} is already a member", param="email")
            row = InvitationRow(
                id="inv_" + uuid.uuid4().hex[:20],
                token_hash=token_hash,
                org_id=org_id,
                email=email,
                role=role,
                invited_by=invited_by,
                created_at=datetime.now(UTC),
                expires_at=expires_at,
            )
            s.add(row)
            s.flush()
            return self._record(s, row)

    def find(self, token_hash: str) -> InvitationRecord | None:
        with self._db.read_session() as s:
            row = s.scalars(select(InvitationRow).where(InvitationRow.token_hash == token_hash)).first()
            return None if row is None else self._record(s, row)

    def list(self, org_id: str) -> list[InvitationRecord]:
        with self._db.read_session() as s:
            rows = s.scalars(
                select(InvitationRow).where(InvitationRow.org_id == org_id).order_by(InvitationRow.created_at.desc())
            ).all()
            return [self._record(s, r) for r in rows]

    def accept(self, token_hash: str, password_hash: str | None) -> tuple[str, str]:
        """Use the invitation: (user id, org id). `password_hash` is set for a person who has none (None
        only for someone who already has one). Refused when used, expired or unknown."""
        now = datetime.now(UTC)
        with self._db.session() as s, s.begin():
            claimed = s.execute(
                update(InvitationRow)
                .where(
                    InvitationRow.token_hash == token_hash,
                    InvitationRow.used_at.is_(None),
                    InvitationRow.expires_at > now,
                )
                .values(used_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise InvalidRequest("This invitation has been used or has expired.", param="token")
            inv = s.scalars(select(InvitationRow).where(InvitationRow.token_hash == token_hash)).one()
            user = s.scalars(select(UserRow).where(UserRow.email == inv.email)).first()
            if user is None:
                user = new_user(s, inv.email)
            if user.password_hash is None:
                if password_hash is None:
                    raise InvalidRequest("a password is needed", param="password")
                # Whoever holds the link (the inviter, too) sets this password: it must open nothing but
                # the inviting organization. A person already in another one, who has no password yet,
                # gets theirs from a platform admin (`yun users passwd`) instead (this rolls the claim back).
                elsewhere = s.scalar(
                    select(MembershipRow.org_id).where(
                        MembershipRow.user_id == user.id, MembershipRow.org_id != inv.org_id
                    )
                )
                if elsewhere is not None:
                    raise InvalidRequest(
                        "This email belongs to someone in another organization who has no password yet: "
                        "ask a platform admin to set one, then open this link again.",
                        param="token",
                    )
                user.password_hash = password_hash
            # An existing member keeps their role: an invitation adds people, it never changes anyone's role.
            if s.get(MembershipRow, (user.id, inv.org_id)) is None:
                s.add(
                    MembershipRow(
                        user_id=user.id, org_id=inv.org_id, role=inv.role, id="mem_" + uuid.uuid4().hex[:20], name=""
                    )
                )
            return user.id, inv.org_id

    @staticmethod
    def _record(s: Session, row: InvitationRow) -> InvitationRecord:
        org_name = s.scalar(select(OrganizationRow.name).where(OrganizationRow.id == row.org_id)) or row.org_id
        has_password = s.scalar(select(UserRow.password_hash).where(UserRow.email == row.email)) is not None
        return InvitationRecord(
            row.id,
            row.org_id,
            org_name,
            row.email,
            row.role,
            _utc(row.created_at),
            _utc(row.expires_at),
            None if row.used_at is None else _utc(row.used_at),
            has_password,
        )
