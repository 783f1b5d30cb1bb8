"""Index the ledger by (org, time): statements read one org's month, not its whole history.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_org_created", "ledger_entries", ["org_id", "created_at", "kind", "amount"])


def downgrade() -> None:
    op.drop_index("ix_ledger_org_created", table_name="ledger_entries")
