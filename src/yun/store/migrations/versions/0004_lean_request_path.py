"""Fewer index pages per request: every index on a table the request path writes is one more page in
each commit's WAL write (SQLite) or WAL record (PostgreSQL).

- ledger_entries: `org_id` and `created_at` alone are covered by ix_ledger_org_created (org_id,
  created_at, kind, amount) and the unique (org_id, kind, reference); nothing reads by time alone.
- reservations: the only reader of `gateway_id`/`settled_at` is recovery, which wants the open holds;
  a partial index over open holds stays a page or two, instead of two indexes over every request ever.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OPEN = sa.text("settled_at IS NULL")


def upgrade() -> None:
    op.drop_index("ix_ledger_entries_org_id", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_created_at", table_name="ledger_entries")
    op.drop_index("ix_reservations_gateway_id", table_name="reservations")
    op.drop_index("ix_reservations_settled_at", table_name="reservations")
    op.create_index(
        "ix_reservations_open",
        "reservations",
        ["gateway_id", "created_at"],
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_open", table_name="reservations")
    op.create_index("ix_reservations_settled_at", "reservations", ["settled_at"])
    op.create_index("ix_reservations_gateway_id", "reservations", ["gateway_id"])
    op.create_index("ix_ledger_entries_created_at", "ledger_entries", ["created_at"])
    op.create_index("ix_ledger_entries_org_id", "ledger_entries", ["org_id"])
