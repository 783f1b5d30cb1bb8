"""Stream progress on the hold: the tokens a running stream has generated so far.

A gateway that dies mid-stream used to leave a hold that recovery could only settle at zero, although
the client had been sent part of the answer. The gateway now records the engine's running counts on the
reservation now and then, and recovery bills the last record (ARCHITECTURE.md: "an aborted stream is
billed for what was generated").

NOT NULL with a server default: existing rows read 0 (no progress, settled at zero as before), and the
request path's INSERT of a hold need not name the columns.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = ("progress_prompt_tokens", "progress_completion_tokens", "progress_cached_tokens")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("reservations", sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite has it since 3.35): a batch rebuild of the table would have to recreate
    # the partial index of open holds by reflection.
    for name in reversed(_COLUMNS):
        op.drop_column("reservations", name)
