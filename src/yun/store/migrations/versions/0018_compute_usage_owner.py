"""An index on `compute_usage (owner_org, deployment_id)`: a tenant's dedicated compute per deployment
(`/v1/organization/deployments`, the console's Models page) is summed from it rather than a scan of every
replica's metered intervals.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_compute_usage_owner", "compute_usage", ["owner_org", "deployment_id"])


def downgrade() -> None:
    op.drop_index("ix_compute_usage_owner", table_name="compute_usage")
