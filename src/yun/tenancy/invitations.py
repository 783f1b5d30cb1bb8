"""Invitations: an organization's owner or admin (or a platform admin) invites an email with a role; the
link they pass on opens `/console/invite/<token>`, where the invitee sets a password and is signed in.

The token has 256 bits of entropy and is kept only as its SHA-256 (as API keys and sessions are); it is
single use and expires (`console.invitation_ttl_s`). Someone who already has a password keeps it: the link
asks for it and adds the membership. An admin cannot invite an owner (only an owner or a platform admin
can), as with keys.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from yun.errors import InvalidRequest, NotFound, PermissionDenied
from yun.store.invitations import InvitationRecord, InvitationRepository
from yun.tenancy.accounts import AccountService, IssuedSession
from yun.tenancy.keys import Principal
from yun.tenancy.orgs import check_role, normal_email

__all__ = ["InvitationService", "IssuedInvitation"]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: InvitationRecord
    token: str
    """The link's secret: the only time it exists outside the invitee's link."""


class InvitationService:
    def __init__(self, repo: InvitationRepository, accounts: AccountService, *, ttl_s: int) -> None:
        self._repo = repo
        self._accounts = accounts
        self._ttl = timedelta(seconds=ttl_s)

    def invite(self, by: Principal, org_id: str, email: str, role: str) -> IssuedInvitation:
        """An invitation to `org_id`, made by `by` (who must be allowed to manage that org's people)."""
        check_role(role)
        if not by.is_platform_admin:
            if by.org_id != org_id or by.role not in ("owner", "admin"):
                raise PermissionDenied(f"A key with role '{by.role}' cannot invite people.")
            if role == "owner" and by.role != "owner":
                raise InvalidRequest("only an owner can invite an owner", param="role")
        token = secrets.token_urlsafe(32)
        found = self._repo.add(
            _token_hash(token), org_id, normal_email(email), role, datetime.now(UTC) + self._ttl, by.key_id
        )
        return IssuedInvitation(found, token)

    def list(self, org_id: str) -> list[InvitationRecord]:
        return self._repo.list(org_id)

    def find(self, token: str) -> InvitationRecord:
        """The invitation of this link, used or not (the page says which); NotFound for an unknown one."""
        found = self._repo.find(_token_hash(token)) if token else None
        if found is None:
            raise NotFound("This invitation link is not valid.")
        return found

    def accept(self, token: str, password: str, ip: str | None = None) -> IssuedSession:
        """Use the link: the invitee is a member with its role, and signed in. A new person's password is
        checked against the length rules; someone who has one must give it (a wrong one counts as a failed
        sign-in of the client address `ip`). Blocking (argon2)."""
        found = self.find(token)
        if not found.usable:
            raise InvalidRequest("This invitation has been used or has expired.", param="token")
        if found.has_password:
            self._accounts.check_address(ip)
            if not self._accounts.password_ok(found.email, password):
                self._accounts.failed_from(ip, None)
                raise InvalidRequest("That is not the password of " + found.email, param="password")
            password_hash = None
        else:
            password_hash = self._accounts.password_hash(password)
        user_id, org_id = self._repo.accept(_token_hash(token), password_hash)
        return self._accounts.open_for(user_id, org_id)
