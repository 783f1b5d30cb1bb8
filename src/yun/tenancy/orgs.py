"""Organizations (tenants), their people and roles.

Roles, from most to least power: owner and admin manage keys and people; member calls the models;
billing-viewer reads usage, balance and statements but cannot spend. Platform admins manage every org.
"""

from __future__ import annotations

import re
import uuid

from yun.errors import InvalidRequest, NotFound, PermissionDenied
from yun.store import MemberRecord, MemberRepository, OrganizationRecord, OrganizationRepository
from yun.tenancy.keys import Principal

__all__ = [
    "INFERENCE_ROLES",
    "MANAGE_ROLES",
    "ROLES",
    "USAGE_ROLES",
    "OrgService",
    "check_role",
    "normal_email",
    "require_role",
]

ROLES = ("owner", "admin", "member", "billing-viewer")
MANAGE_ROLES = frozenset({"owner", "admin"})
INFERENCE_ROLES = frozenset({"owner", "admin", "member"})
USAGE_ROLES = frozenset(ROLES)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def require_role(principal: Principal, allowed: frozenset[str], action: str) -> None:
    if principal.is_platform_admin or principal.role in allowed:
        return
    raise PermissionDenied(f"A key with role '{principal.role}' cannot {action}.")


def normal_email(email: str) -> str:
    """An email as Yun stores it (lower case), or a 400 naming `email`."""
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise InvalidRequest("not an email address", param="email")
    return email


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    return role


class OrgService:
    def __init__(self, orgs: OrganizationRepository, members: MemberRepository) -> None:
        self.orgs = orgs
        self.members = members

    def create(self, name: str, rpm_limit: int | None = None, tpm_limit: int | None = None) -> OrganizationRecord:
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidRequest("name must be 1-200 characters", param="name")
        return self.orgs.create("org-" + uuid.uuid4().hex[:20], name, rpm_limit, tpm_limit)

    def get(self, org_id: str) -> OrganizationRecord:
        org = self.orgs.get(org_id)
        if org is None:
            raise NotFound(f"no organization {org_id!r}")
        return org

    def resolve(self, ref: str) -> OrganizationRecord:
        """The organization with this id, else the one with this name (names are unique): operators
        name orgs either way, on the CLI and in /admin paths."""
        org = self.orgs.get(ref) or self.orgs.by_name(ref)
        if org is None:
            raise NotFound(f"no organization {ref!r} (give an organization id or name)", param="org")
        return org

    def add_member(self, org_id: str, email: str, name: str, role: str) -> MemberRecord:
        email = normal_email(email)
        self.get(org_id)
        return self.members.add(org_id, email, name, check_role(role))
