"""Stored responses of the Responses API (`POST /v1/responses` with `store: true`, OpenAI's default).

One row per stored response: its organization, the response it continued (`previous_response_id`), its
own input items and the response object as answered. Rows are kept until their organization deletes them
(`DELETE /v1/responses/{id}`); every read is scoped to the organization, so another tenant's id is not found.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(length=80), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("previous_response_id", sa.String(length=80), nullable=True),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_responses_org_created", "responses", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_org_created", table_name="responses")
    op.drop_table("responses")
