"""Deployments and the replica registry: the control plane's records.

A model used to be one `models` row with a replica count that every gateway ran a copy of. Now a
deployment (model, engine, replicas min/max/desired, resources and engine arguments per replica,
owner) is a record of its own that the active controller makes true, and every replica it placed is a
`replicas` row (endpoint, node, sealed engine secret, state and times) that gateways route from.

Existing local models get their shared deployment from the controller at its first start (the same
path a new model takes), with the replica count they had, so an upgraded installation serves what it
served before.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=80), primary_key=True),
        sa.Column("model_id", sa.String(length=200), nullable=False, index=True),
        sa.Column("engine", sa.String(length=20), nullable=False),
        sa.Column("owner_org", sa.String(length=40), nullable=True, index=True),
        sa.Column("min_replicas", sa.Integer(), nullable=False),
        sa.Column("max_replicas", sa.Integer(), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Float(), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("parallel", sa.Integer(), nullable=True),
        sa.Column("context", sa.Integer(), nullable=True),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("autoscale", sa.JSON(), nullable=False),
        sa.Column("idle_timeout_s", sa.Float(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=80), primary_key=True),
        sa.Column("deployment_id", sa.String(length=80), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=20), nullable=False),
        sa.Column("shape", sa.String(length=80), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_index("ix_replicas_deployment_state", "replicas", ["deployment_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_replicas_deployment_state", table_name="replicas")
    op.drop_table("replicas")
    op.drop_table("deployments")
