"""Gateway instances with a lease: recovery settles a hold only when its owner is dead.

Holds used to belong to a gateway *name* (host:port), and a starting gateway settled every open hold of
its name before it knew whether it could even bind its port, so a second `yun serve` on the data dir
of a running one billed the live server's streams as interrupted. Now every `yun serve` process
registers an instance (a fresh id) with a lease it renews while it runs; `reservations.gateway_id`
holds that instance id, and recovery settles a hold only once its owner's lease has expired (or its
owner has no row at all and the hold is older than any request can run: holds written before this
migration, by name).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_instances",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_instances")
