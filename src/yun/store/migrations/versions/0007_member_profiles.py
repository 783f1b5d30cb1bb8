"""What an organization says about a person belongs to that organization.

A person was one global `users` row keyed by email, holding the name the first organization gave it,
and members were named by that row's global id: org A adding bob@b.example saw the name org B had
stored, and the same user id in both orgs let them tell they share a person. Each membership now has
its own id (`memberships.id`, what the API names a member by) and its own `name`.

Existing names: `users.name` was written by whichever organization added the person first, which is
not recorded. A person in one organization keeps the name (that org wrote it); a person in several gets
an empty name in each, rather than one org's words shown to the others. `users.name` is no longer
read or written by Yun.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_MEMBERSHIPS = sa.table(
    "memberships",
    sa.column("user_id", sa.String),
    sa.column("org_id", sa.String),
    sa.column("id", sa.String),
    sa.column("name", sa.String),
)
_USERS = sa.table("users", sa.column("id", sa.String), sa.column("name", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=False, server_default=""))
    conn = op.get_bind()
    memberships = conn.execute(sa.select(_MEMBERSHIPS.c.user_id, _MEMBERSHIPS.c.org_id)).all()
    orgs_of: dict[str, int] = {}
    for user_id, _ in memberships:
        orgs_of[user_id] = orgs_of.get(user_id, 0) + 1
    names = dict(conn.execute(sa.select(_USERS.c.id, _USERS.c.name)).all())
    for user_id, org_id in memberships:
        conn.execute(
            _MEMBERSHIPS.update()
            .where(_MEMBERSHIPS.c.user_id == user_id, _MEMBERSHIPS.c.org_id == org_id)
            .values(id=member_id(), name=(names.get(user_id) or "") if orgs_of[user_id] == 1 else "")
        )
    with op.batch_alter_table("memberships") as batch:
        batch.alter_column("id", existing_type=sa.String(length=40), nullable=False)
        batch.create_unique_constraint("uq_memberships_id", ["id"])


def downgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.drop_constraint("uq_memberships_id", type_="unique")
        batch.drop_column("name")
        batch.drop_column("id")


def member_id() -> str:
    """The same form as the repository's new member ids."""
    return "mem_" + uuid.uuid4().hex[:20]
