"""Uploaded files (`/v1/files`): one row per file of an organization, naming where its bytes are stored.

The bytes themselves live in the file store (a directory in the data dir, or an S3-compatible bucket); the
row is what the API lists and what an organization's storage limit adds up. Deleting a file deletes its row.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("storage_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_files_org_created", "files", ["org_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_files_org_created", table_name="files")
    op.drop_table("files")
