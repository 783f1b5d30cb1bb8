"""Gateway loads: what each gateway has queued and in flight per deployment, for the autoscaler.

The controller scales deployments from the queue and in-flight work of every gateway. With Redis the
gateways publish it there; without, in this table: one row per (gateway instance, deployment) while
that load is not zero, rewritten about once a second when it changes, and counted only until its
`expires_at`, so a gateway that died stops counting within seconds.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_loads",
        sa.Column("gateway_id", sa.String(length=40), primary_key=True),
        sa.Column("deployment_id", sa.String(length=80), primary_key=True),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_loads")
