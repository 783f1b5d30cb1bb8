"""ORM rows of the jobs: uploaded files and fine-tuning jobs with their events and checkpoints (on the
same `Base` as every other table; orm.py imports this module so its metadata is whole)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from yun.store.orm import Base

__all__ = ["FileRow", "FineTuningCheckpointRow", "FineTuningEventRow", "FineTuningJobRow"]


class FineTuningJobRow(Base):
    """A fine-tuning job of one organization (`/v1/fine_tuning/jobs`); every read names the organization."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        Index("ix_fine_tuning_jobs_org_created", "org_id", "created_at"),
        Index("ix_fine_tuning_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    model_id: Mapped[str] = mapped_column(String(200))
    training_file: Mapped[str] = mapped_column(String(80))
    validation_file: Mapped[str | None] = mapped_column(String(80), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    training_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    """Tokens of the training file: x epochs is what the job holds for."""
    trained_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    """Tokens the steps that completed trained on: what the job is billed for."""
    price_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hold_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    runner: Mapped[str | None] = mapped_column(String(120), nullable=True)
    progress_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    """How far into the trainer's event log the runner has recorded (so a restarted runner records none twice)."""
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    """CPU-seconds (wall x CPUs) of every run of the job recorded so far (see `training_compute`)."""
    run_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When its latest run (attempt number `attempts`) started: the start of the compute it is recorded for."""
    run_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When its latest run's trainer last wrote an event, as recorded: the end of a run that vanished."""
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FineTuningEventRow(Base):
    __tablename__ = "fine_tuning_events"
    __table_args__ = (Index("ix_fine_tuning_events_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"))
    level: Mapped[str] = mapped_column(String(10))
    type: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FineTuningCheckpointRow(Base):
    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(240))
    adapter: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FileRow(Base):
    """An uploaded file (`/v1/files`) of one organization: what the API says of it, and the key of its
    bytes in the file store (jobs/files). Deleting a file deletes its row: the sum of an organization's
    rows is the storage it holds against its limit."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_org_created", "org_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    storage_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
