"""Organizations get a weight: their share of a busy model's slots against other organizations'.

The gateway's fair queue (cluster/fair.py) credits each waiting organization tokens in proportion to its
weight; 1 is everyone's default, 2 gets twice the share of a 1 while both wait.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("weight")
