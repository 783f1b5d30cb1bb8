"""Training is its own line in usage, statements and unit economics (issue 13, Money).

- `usage_records.training_tokens`, `usage_rollups.training_tokens` and `training_cost`: a fine-tuning job's
  trained tokens and their cost. Until now its settlement was written as the base model's input tokens
  (`prompt_tokens`, `input_cost`) and counted as a request; the backfill moves every existing `fine_tuning`
  record there: per record, its `prompt_tokens` become `training_tokens`; per rollup row (org, model, UTC
  day of the record), the same tokens, the cost and the request count move out of the input columns into
  the training ones. `cost` (every charge) is unchanged, so statements still equal the ledger.
- `fine_tuning_jobs.run_started_at` and `run_seen_at`: when the job's latest run started, and when its
  trainer last wrote an event (the end of a run that vanished).
- `training_compute`: the compute each run of a job held, per UTC day, at its shape's cost price (for unit
  economics). Runs that ended before this migration are not known run by run and are not backfilled.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ZERO = sa.text("0")
_TRAINING = "fine_tuning"


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("training_tokens", sa.BigInteger(), nullable=False, server_default=_ZERO))
    for name in ("training_tokens", "training_cost"):
        op.add_column("usage_rollups", sa.Column(name, sa.BigInteger(), nullable=False, server_default=_ZERO))
    with op.batch_alter_table("fine_tuning_jobs") as t:
        t.add_column(sa.Column("run_started_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("run_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "training_compute",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("shape", sa.String(length=80), nullable=False),
        sa.Column("cpus", sa.Float(), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("price_version", sa.Integer(), nullable=True),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "run", "day", name="uq_training_compute_job_run_day"),
    )
    op.create_index("ix_training_compute_day", "training_compute", ["day"])
    _backfill()


def _day(created_at: Any) -> str:
    # SQLite hands back naive datetimes (stored UTC) or, read raw, strings; PostgreSQL aware ones.
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return str(created_at.astimezone(UTC).strftime("%Y-%m-%d"))


def _backfill() -> None:
    """Move existing fine-tuning settlements out of the input columns (the rollup row of a settlement is
    the one of its record's UTC day: both are written with the same timestamp)."""
    conn = op.get_bind()
    records = sa.table(
        "usage_records",
        sa.column("endpoint", sa.String),
        sa.column("org_id", sa.String),
        sa.column("model_id", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("prompt_tokens", sa.Integer),
        sa.column("training_tokens", sa.BigInteger),
        sa.column("cost", sa.BigInteger),
    )
    rollups = sa.table(
        "usage_rollups",
        *(sa.column(n, sa.String) for n in ("org_id", "model_id", "day")),
        *(
            sa.column(n, sa.BigInteger)
            for n in ("requests", "prompt_tokens", "input_cost", "training_tokens", "training_cost")
        ),
    )
    moved: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    found = conn.execute(
        sa.select(
            records.c.org_id, records.c.model_id, records.c.created_at, records.c.prompt_tokens, records.c.cost
        ).where(records.c.endpoint == _TRAINING)
    )
    for org, model, created_at, tokens, cost in found:
        into = moved[(org, model, _day(created_at))]
        into[0] += 1
        into[1] += int(tokens)
        into[2] += int(cost)
    conn.execute(
        sa.update(records)
        .where(records.c.endpoint == _TRAINING)
        .values(training_tokens=records.c.prompt_tokens, prompt_tokens=0)
    )
    for (org, model, day), (count, tokens, cost) in moved.items():
        conn.execute(
            sa.update(rollups)
            .where(rollups.c.org_id == org, rollups.c.model_id == model, rollups.c.day == day)
            .values(
                requests=rollups.c.requests - count,
                prompt_tokens=rollups.c.prompt_tokens - tokens,
                input_cost=rollups.c.input_cost - cost,
                training_tokens=rollups.c.training_tokens + tokens,
                training_cost=rollups.c.training_cost + cost,
            )
        )


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text(
            # Back into the input columns (the request counts the upgrade took out are not put back).
            "UPDATE usage_rollups SET prompt_tokens = prompt_tokens + training_tokens,"
            " input_cost = input_cost + training_cost"
        )
    )
    conn.execute(
        sa.text("UPDATE usage_records SET prompt_tokens = training_tokens WHERE endpoint = :e"), {"e": _TRAINING}
    )
    op.drop_index("ix_training_compute_day", table_name="training_compute")
    op.drop_table("training_compute")
    with op.batch_alter_table("fine_tuning_jobs") as t:
        t.drop_column("run_seen_at")
        t.drop_column("run_started_at")
    for name in ("training_cost", "training_tokens"):
        op.drop_column("usage_rollups", name)
    op.drop_column("usage_records", "training_tokens")
