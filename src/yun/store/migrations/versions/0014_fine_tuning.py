"""Fine-tuning jobs (`/v1/fine_tuning/jobs`), their events and checkpoints; training prices; owned models.

- `fine_tuning_jobs`: one row per job, scoped to its organization, with its state (validating_files ->
  queued -> running -> succeeded | failed | cancelled), the hyperparameters it resolved, what it holds and
  trained, and the model it made.
- `fine_tuning_events` (status changes, loss per step, validation loss per epoch) and
  `fine_tuning_checkpoints` (one per epoch), read back newest first.
- `prices.training_per_mtok`: a model's training price per 1M trained tokens, versioned with its token
  prices (null: the model cannot be fine-tuned for money until one is set).
- `replicas.adapters`: the LoRA adapters a replica's engine loaded, in its order (llama.cpp's ids);
- `models.owner_org` (a fine-tuned model belongs to one organization; null: everyone's), `base_model` and
  `adapter` (a LoRA adapter served on the base model's replicas).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("training_file", sa.String(length=80), nullable=False),
        sa.Column("validation_file", sa.String(length=80), nullable=True),
        sa.Column("suffix", sa.String(length=64), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("fine_tuned_model", sa.String(length=200), nullable=True),
        sa.Column("training_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("price_version", sa.Integer(), nullable=True),
        sa.Column("hold_id", sa.String(length=80), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("runner", sa.String(length=120), nullable=True),
        sa.Column("progress_offset", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("compute_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_fine_tuning_jobs_org_created", "fine_tuning_jobs", ["org_id", "created_at"])
    op.create_index("ix_fine_tuning_jobs_status", "fine_tuning_jobs", ["status"])
    op.create_table(
        "fine_tuning_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(length=40), nullable=False, unique=True),
        sa.Column("job_id", sa.String(length=40), sa.ForeignKey("fine_tuning_jobs.id"), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_fine_tuning_events_job_seq", "fine_tuning_events", ["job_id", "seq"])
    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(length=40), nullable=False, unique=True),
        sa.Column("job_id", sa.String(length=40), sa.ForeignKey("fine_tuning_jobs.id"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(length=240), nullable=False),
        sa.Column("adapter", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "step"),
    )
    with op.batch_alter_table("prices") as t:
        t.add_column(sa.Column("training_per_mtok", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("replicas") as t:
        t.add_column(sa.Column("adapters", sa.JSON(), nullable=True))
    with op.batch_alter_table("models") as t:
        t.add_column(sa.Column("owner_org", sa.String(length=40), nullable=True))
        t.add_column(sa.Column("base_model", sa.String(length=200), nullable=True))
        t.add_column(sa.Column("adapter", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as t:
        t.drop_column("adapter")
        t.drop_column("base_model")
        t.drop_column("owner_org")
    with op.batch_alter_table("replicas") as t:
        t.drop_column("adapters")
    with op.batch_alter_table("prices") as t:
        t.drop_column("training_per_mtok")
    op.drop_table("fine_tuning_checkpoints")
    op.drop_index("ix_fine_tuning_events_job_seq", table_name="fine_tuning_events")
    op.drop_table("fine_tuning_events")
    op.drop_index("ix_fine_tuning_jobs_status", table_name="fine_tuning_jobs")
    op.drop_index("ix_fine_tuning_jobs_org_created", table_name="fine_tuning_jobs")
    op.drop_table("fine_tuning_jobs")
