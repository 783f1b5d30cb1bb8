"""People who sign in (the console): passwords, lockouts and sessions.

A password is kept only as an argon2id hash. A session is a random token in an HTTP-only cookie, kept
only as its SHA-256 (as API keys are), with a CSRF token that every state-changing request made with
the cookie must echo in a header. A session acts as a person with their role in one organization, or as
the platform-admin key it was opened with, and resolves to the same `Principal` an API key does, so every
endpoint applies one set of rules to both.

Failed sign-ins all get one answer, whatever went wrong (unknown email, wrong password, locked account,
no organization), so the answer never tells whether an email has an account; an unknown email costs one
argon2 verification too, so the time taken does not tell either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from yun.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited
from yun.store.people import AccountRepository, SessionRecord
from yun.tenancy.keys import KeyService, Principal
from yun.tenancy.orgs import check_role, normal_email
from yun.tenancy.throttle import SignInThrottle

__all__ = ["AccountService", "IssuedSession", "SessionPrincipal", "check_password"]

MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def check_password(password: str, param: str = "password") -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(f"a password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters", param=param)
    return password


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedSession:
    token: str
    """The cookie's value: the only time it exists outside the browser."""
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class SessionPrincipal:
    """A live session: who it acts as, and what it needs to check a state-changing request."""

    principal: Principal
    session_id: str
    csrf_token: str
    user_id: str | None
    email: str | None
    """The person signed in; None for a session opened with an admin key."""

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


class AccountService:
    def __init__(
        self,
        repo: AccountRepository,
        keys: KeyService,
        *,
        session_ttl_s: int,
        max_failed_logins: int,
        lockout_s: int,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self._repo = repo
        self.throttle = throttle
        self._keys = keys
        self._ttl = timedelta(seconds=session_ttl_s)
        self._max_failures = max_failed_logins
        self._lockout = timedelta(seconds=lockout_s)
        self._hasher = PasswordHasher()
        self._decoy: str | None = None
        minutes = max(1, round(lockout_s / 60))
        self.refusal = (
            "Incorrect email or password. After "
            f"{max_failed_logins} failed attempts in a row an account is locked for {minutes} minutes."
        )
        """The one answer to every failed sign-in. With a throttle, an account's lockout counts one failed
        attempt per client address per window (throttle.py): a lockout takes that many addresses."""

    # -- people (admin) ------------------------------------------------------------------------
    def create_user(self, org_id: str, email: str, role: str, password: str) -> None:
        self._repo.create_user(org_id, normal_email(email), check_role(role), self._hash(check_password(password)))

    def set_password(self, email: str, password: str) -> None:
        """An admin sets a person's password: any lockout is lifted and their sessions end."""
        self._repo.set_password(normal_email(email), self._hash(check_password(password)))

    def change_password(self, session: SessionPrincipal, current: str, new: str) -> None:
        """The signed-in person changes their own password (their other sessions end)."""
        if session.user_id is None:
            raise PermissionDenied("This session was opened with an API key: it has no password to change.")
        stored = self._repo.password_hash_of(session.user_id)
        if stored is None or not self._verify(stored, current):
            raise InvalidRequest("the current password is not correct", param="current_password")
        self._repo.change_password(session.user_id, self._hash(check_password(new, "new_password")), session.session_id)

    # -- signing in and out --------------------------------------------------------------------
    def sign_in(self, email: str, password: str, org: str | None = None, ip: str | None = None) -> IssuedSession:
        """A session for the person with this email and password, in organization `org` (an id or a
        name; by default the first of theirs by name), asked from client address `ip` (throttle.py).
        Blocking (argon2): call it off the event loop."""
        self.check_address(ip)
        creds = self._repo.credentials(email.strip().lower())
        if creds is None or creds.password_hash is None:
            self._verify(self._decoy_hash(), password)  # as long as a real check, to not tell it apart
            self.failed_from(ip, None)
            raise AuthenticationFailed(self.refusal)
        if creds.locked_until is not None and creds.locked_until > datetime.now(UTC):
            self._verify(self._decoy_hash(), password)  # a locked account answers in the same time too
            self.failed_from(ip, None)
            raise AuthenticationFailed(self.refusal)
        if not self._verify(creds.password_hash, password):
            if self.failed_from(ip, creds.user_id):
                self._repo.record_failure(creds.user_id, self._max_failures, self._lockout)
            raise AuthenticationFailed(self.refusal)
        self._repo.record_success(creds.user_id)
        if self._hasher.check_needs_rehash(creds.password_hash):
            self._repo.set_password(creds.email, self._hash(password))
        orgs = self._repo.memberships(creds.user_id)
        chosen = [o for o in orgs if org is None or org in (o[0], o[1])]
        if not chosen:
            raise AuthenticationFailed(
                "This account belongs to no organization." if org is None else f"You are not a member of {org!r}."
            )
        return self._open(user_id=creds.user_id, org_id=chosen[0][0])

    def sign_in_with_key(self, secret: str, ip: str | None = None) -> IssuedSession:
        """A session acting as a platform-admin API key (the bootstrap key opens the console). Tenant keys
        are refused: their holders sign in as people."""
        self.check_address(ip)
        try:
            principal = self._keys.verify(secret.strip())
        except AuthenticationFailed:
            self.failed_from(ip, None)
            raise
        if not principal.is_platform_admin:
            self.failed_from(ip, None)
            raise AuthenticationFailed("Only a platform-admin key opens the console; sign in with your email.")
        return self._open(key_id=principal.key_id)

    def check_address(self, ip: str | None) -> None:
        """RateLimited while the client address `ip` has too many failed sign-ins (throttle.py)."""
        if self.throttle is None or ip is None:
            return
        wait = self.throttle.retry_after(ip)
        if wait > 0:
            raise RateLimited(
                f"Too many failed sign-ins from your address: try again in {max(1, round(wait / 60))} minutes.",
                retry_after_s=wait,
            )

    def failed_from(self, ip: str | None, user_id: str | None) -> bool:
        """Count a failure on the address; whether the account's lockout counts it too (throttle.py)."""
        if self.throttle is None or ip is None:
            return user_id is not None
        return self.throttle.failed(ip, user_id)

    def sign_out(self, token: str) -> None:
        self._repo.delete_session(_token_hash(token))

    def resolve(self, token: str) -> SessionPrincipal | None:
        """The session this cookie token opens, or None (unknown, expired, signed out, member removed,
        key revoked). Blocking: a database read."""
        found = self._repo.session(_token_hash(token))
        if found is None:
            return None
        principal = self._principal(found)
        if principal is None:
            return None
        return SessionPrincipal(principal, found.id, found.csrf_token, found.user_id, found.email)

    def _principal(self, found: SessionRecord) -> Principal | None:
        if found.key_id is not None:
            try:
                return self._keys.principal_of(found.key_id)
            except AuthenticationFailed:  # the key was revoked or expired: so is every session it opened
                return None
        if found.user_id is None or found.org_id is None or found.role is None:
            return None
        # Requests a person makes through the console are theirs: usage records carry the user's id
        # where a key's id would be.
        return Principal(key_id=found.user_id, org_id=found.org_id, is_platform_admin=False, role=found.role)

    def _open(
        self, *, user_id: str | None = None, org_id: str | None = None, key_id: str | None = None
    ) -> IssuedSession:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + self._ttl
        self._repo.add_session(_token_hash(token), csrf, expires_at, user_id=user_id, org_id=org_id, key_id=key_id)
        return IssuedSession(token, csrf, expires_at)

    def open_for(self, user_id: str, org_id: str) -> IssuedSession:
        """A session for a person who proved themselves another way (an invitation link just used)."""
        return self._open(user_id=user_id, org_id=org_id)

    def password_hash(self, password: str, param: str = "password") -> str:
        """The argon2id hash of a new password (refused if it breaks the length rules)."""
        return self._hash(check_password(password, param))

    def password_ok(self, email: str, password: str) -> bool:
        """Whether `password` is the current password of the person with this email."""
        creds = self._repo.credentials(normal_email(email))
        if creds is None or creds.password_hash is None:
            self._verify(self._decoy_hash(), password)
            return False
        return self._verify(creds.password_hash, password)

    # -- hashing -------------------------------------------------------------------------------
    def _hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _decoy_hash(self) -> str:
        if self._decoy is None:
            self._decoy = self._hash(secrets.token_urlsafe(16))
        return self._decoy
