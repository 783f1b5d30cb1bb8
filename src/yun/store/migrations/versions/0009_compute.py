"""Compute metering and prices: every replica's life as closed intervals of replica-seconds, priced.

The compute meter (metering/compute.py) cuts each replica's life, from the registry's `created_at` to
its `stopped_at`, into intervals of whole seconds, each written once (unique on replica and start), by
deployment, owner, model, resource shape and node, priced when metered at the shape's compute price
version (`compute_prices`: the operator's cost and the dedicated price per replica-hour, versioned).

A dedicated deployment's intervals are charged to its owner through the money path: a settlement of a
compute hold (endpoint `compute`) marks the intervals it charges (`charge_ref`) and writes their
replica-seconds on its usage record and the daily rollup (`compute_seconds`, `compute_cost`), so
statements show compute beside tokens and still reconcile with the ledger.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FINAL = sa.text("final")
_UNBILLED = sa.text("charge_ref IS NULL AND owner_org IS NOT NULL")
_ZERO = sa.text("0")


def upgrade() -> None:
    op.create_table(
        "compute_prices",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("shape", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cost_per_hour", sa.BigInteger(), nullable=False),
        sa.Column("price_per_hour", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("shape", "version"),
    )
    op.create_index("ix_compute_prices_shape", "compute_prices", ["shape"])
    op.create_table(
        "compute_usage",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("replica_id", sa.String(length=80), nullable=False),
        sa.Column("deployment_id", sa.String(length=80), nullable=False),
        sa.Column("owner_org", sa.String(length=40), nullable=True),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("shape", sa.String(length=80), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("price_version", sa.Integer(), nullable=True),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("charge_ref", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("replica_id", "started_at", name="uq_compute_usage_replica_start"),
    )
    op.create_index("ix_compute_usage_day", "compute_usage", ["day"])
    op.create_index(
        "ix_compute_usage_final", "compute_usage", ["replica_id"], sqlite_where=_FINAL, postgresql_where=_FINAL
    )
    op.create_index(
        "ix_compute_usage_unbilled",
        "compute_usage",
        ["deployment_id"],
        sqlite_where=_UNBILLED,
        postgresql_where=_UNBILLED,
    )
    op.add_column("usage_records", sa.Column("compute_seconds", sa.BigInteger(), nullable=False, server_default=_ZERO))
    for name in ("compute_seconds", "compute_cost"):
        op.add_column("usage_rollups", sa.Column(name, sa.BigInteger(), nullable=False, server_default=_ZERO))


def downgrade() -> None:
    for name in ("compute_cost", "compute_seconds"):
        op.drop_column("usage_rollups", name)
    op.drop_column("usage_records", "compute_seconds")
    op.drop_index("ix_compute_usage_unbilled", table_name="compute_usage")
    op.drop_index("ix_compute_usage_final", table_name="compute_usage")
    op.drop_index("ix_compute_usage_day", table_name="compute_usage")
    op.drop_table("compute_usage")
    op.drop_index("ix_compute_prices_shape", table_name="compute_prices")
    op.drop_table("compute_prices")
