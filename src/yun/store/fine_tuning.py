"""Fine-tuning jobs, their events and checkpoints, per organization.

Every read a tenant can reach names the organization: another tenant's job id is simply not found, the
same answer as an id that never existed. Status changes are guarded (`transition` moves a job only from
the states it names), so two writers (the API cancelling, the runner finishing) never both win; which
moves are allowed is the job machinery's (yun.jobs.fine_tuning), not the store's.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from yun.errors import NotFound
from yun.store.db import Database
from yun.store.orm_jobs import FineTuningCheckpointRow, FineTuningEventRow, FineTuningJobRow

__all__ = ["FineTuningRepository", "JobCheckpoint", "JobEvent", "JobRecord", "Page"]


@dataclass(frozen=True)
class JobRecord:
    id: str
    org_id: str
    key_id: str
    model_id: str
    training_file: str
    seed: int
    hyperparameters: dict[str, Any]
    status: str
    validation_file: str | None = None
    suffix: str | None = None
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    training_tokens: int = 0
    trained_tokens: int = 0
    price_version: int | None = None
    hold_id: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    runner: str | None = None
    progress_offset: int = 0
    """Bytes of the trainer's event log already recorded as events (a restarted runner goes on from here)."""
    compute_seconds: float = 0.0
    """CPU-seconds (wall x CPUs) of the job's runs recorded so far."""
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_started_at: datetime | None = None
    """When its latest run (number `attempts`) started."""
    run_seen_at: datetime | None = None
    """When the trainer of its latest run last wrote an event (the trainer's clock), as far as recorded."""


@dataclass(frozen=True)
class JobEvent:
    id: str
    job_id: str
    level: str
    type: str
    """`message` (a status change, a note) or `metrics` (loss per step, validation loss per epoch)."""
    message: str
    data: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class JobCheckpoint:
    id: str
    job_id: str
    step: int
    epoch: int
    metrics: dict[str, Any]
    model: str
    """The checkpoint's model name (`ft:...:ckpt-step-N`)."""
    adapter: str
    """Where its LoRA adapter is (a FileStore key or a path), for the job machinery only."""
    created_at: datetime


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T] = field(default_factory=list)
    has_more: bool = False


_JOB_FIELDS = tuple(f for f in JobRecord.__dataclass_fields__ if f != "metadata")


def _utc(t: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every one written here is UTC.
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _job(row: FineTuningJobRow) -> JobRecord:
    values: dict[str, Any] = {name: getattr(row, name) for name in _JOB_FIELDS}
    for name in ("created_at", "started_at", "finished_at", "run_started_at", "run_seen_at"):
        values[name] = _utc(values[name])
    return JobRecord(**values, metadata=row.metadata_)


def _event(row: FineTuningEventRow) -> JobEvent:
    created = _utc(row.created_at)
    assert created is not None
    return JobEvent(row.id, row.job_id, row.level, row.type, row.message, row.data, created)


def _checkpoint(row: FineTuningCheckpointRow) -> JobCheckpoint:
    created = _utc(row.created_at)
    assert created is not None
    return JobCheckpoint(row.id, row.job_id, row.step, row.epoch, row.metrics, row.model, row.adapter, created)


def _row_values(changes: dict[str, Any]) -> dict[str, Any]:
    return {("metadata_" if k == "metadata" else k): v for k, v in changes.items()}


class FineTuningRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- jobs ----------------------------------------------------------------------------------------
    def create(self, job: JobRecord) -> JobRecord:
        created = job.created_at or datetime.now(UTC)
        values = {name: getattr(job, name) for name in _JOB_FIELDS}
        values["created_at"] = created
        with self._db.session() as s, s.begin():
            s.add(FineTuningJobRow(**values, metadata_=job.metadata))
        return self.get_any(job.id)

    def get(self, org_id: str, job_id: str) -> JobRecord | None:
        """The organization's job, or None (also for another organization's)."""
        with self._db.read_session() as s:
            row = s.get(FineTuningJobRow, job_id)
            return None if row is None or row.org_id != org_id else _job(row)

    def get_any(self, job_id: str) -> JobRecord:
        """A job whatever its organization: for the job machinery, never for a tenant's request."""
        with self._db.read_session() as s:
            row = s.get(FineTuningJobRow, job_id)
            if row is None:
                raise NotFound(f"no fine-tuning job {job_id!r}")
            return _job(row)

    def jobs(self, org_id: str, *, after: str | None = None, limit: int = 20) -> Page[JobRecord]:
        """The organization's jobs, newest first; `after` a job id: those listed after it."""
        q = select(FineTuningJobRow).where(FineTuningJobRow.org_id == org_id)
        with self._db.read_session() as s:
            if after is not None:
                cursor = s.get(FineTuningJobRow, after)
                if cursor is None or cursor.org_id != org_id:
                    raise NotFound(f"no fine-tuning job {after!r}", param="after")
                q = q.where(
                    (FineTuningJobRow.created_at < cursor.created_at)
                    | ((FineTuningJobRow.created_at == cursor.created_at) & (FineTuningJobRow.id < cursor.id))
                )
            rows = s.scalars(
                q.order_by(FineTuningJobRow.created_at.desc(), FineTuningJobRow.id.desc()).limit(limit + 1)
            ).all()
            return Page([_job(r) for r in rows[:limit]], len(rows) > limit)

    def in_status(self, statuses: Collection[str]) -> list[JobRecord]:
        """Jobs in any of `statuses`, oldest first (the runner's queue and its jobs after a restart)."""
        with self._db.read_session() as s:
            q = select(FineTuningJobRow).where(FineTuningJobRow.status.in_(list(statuses)))
            return [_job(r) for r in s.scalars(q.order_by(FineTuningJobRow.created_at, FineTuningJobRow.id))]

    def transition(self, job_id: str, to: str, *, from_: Collection[str], **changes: Any) -> JobRecord | None:
        """Move a job to `to` (with `changes`) only if it is in one of `from_`; None if it was not (someone
        else moved it first). One guarded UPDATE: of two writers racing, exactly one wins."""
        with self._db.session() as s, s.begin():
            done = s.execute(
                update(FineTuningJobRow)
                .where(FineTuningJobRow.id == job_id, FineTuningJobRow.status.in_(list(from_)))
                .values(status=to, **_row_values(changes))
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return None
        return self.get_any(job_id)

    def update(self, job_id: str, **changes: Any) -> None:
        """Write progress (trained tokens, compute seconds, runner) without moving the status."""
        with self._db.session() as s, s.begin():
            s.execute(update(FineTuningJobRow).where(FineTuningJobRow.id == job_id).values(**_row_values(changes)))

    def request_cancel(self, org_id: str, job_id: str) -> JobRecord | None:
        """Flag the organization's job to be cancelled (whoever runs it stops it); None if it is not theirs."""
        with self._db.session() as s, s.begin():
            done = s.execute(
                update(FineTuningJobRow)
                .where(FineTuningJobRow.id == job_id, FineTuningJobRow.org_id == org_id)
                .values(cancel_requested=True)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return None
        return self.get_any(job_id)

    # -- events and checkpoints ------------------------------------------------------------------------
    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> JobEvent:
        """Record an event; `changes` to the job (its progress offset past the line the event came from,
        say) are written in the same transaction, so a runner killed in between records it once."""
        row = FineTuningEventRow(
            id=f"ftevent-{uuid.uuid4().hex[:24]}",
            job_id=job_id,
            level=level,
            type=type,
            message=message,
            data=data,
            created_at=datetime.now(UTC),
        )
        with self._db.session() as s, s.begin():
            s.add(row)
            if changes:
                s.execute(update(FineTuningJobRow).where(FineTuningJobRow.id == job_id).values(**_row_values(changes)))
            s.flush()
            return _event(row)

    def events(self, org_id: str, job_id: str, *, after: str | None = None, limit: int = 20) -> Page[JobEvent]:
        """The job's events, newest first (as OpenAI lists them); `after` an event id: older ones."""
        return self._page(FineTuningEventRow, _event, org_id, job_id, after, limit)

    def add_checkpoint(
        self, job_id: str, *, step: int, epoch: int, metrics: dict[str, Any], model: str, adapter: str
    ) -> JobCheckpoint:
        """Record a checkpoint; the same step again (a runner reading its events twice) is the same one."""
        row = FineTuningCheckpointRow(
            id=f"ftckpt-{uuid.uuid4().hex[:24]}",
            job_id=job_id,
            step=step,
            epoch=epoch,
            metrics=metrics,
            model=model,
            adapter=adapter,
            created_at=datetime.now(UTC),
        )
        try:
            with self._db.session() as s, s.begin():
                s.add(row)
                s.flush()
                return _checkpoint(row)
        except IntegrityError:
            with self._db.read_session() as s:
                q = select(FineTuningCheckpointRow).where(
                    FineTuningCheckpointRow.job_id == job_id, FineTuningCheckpointRow.step == step
                )
                return _checkpoint(s.scalars(q).one())

    def checkpoints(
        self, org_id: str, job_id: str, *, after: str | None = None, limit: int = 10
    ) -> Page[JobCheckpoint]:
        """The job's checkpoints, newest first; `after` a checkpoint id: older ones."""
        return self._page(FineTuningCheckpointRow, _checkpoint, org_id, job_id, after, limit)

    def _page(self, table: Any, record: Any, org_id: str, job_id: str, after: str | None, limit: int) -> Page[Any]:
        with self._db.read_session() as s:
            job = s.get(FineTuningJobRow, job_id)
            if job is None or job.org_id != org_id:
                raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
            q = select(table).where(table.job_id == job_id)
            if after is not None:
                cursor = s.scalars(select(table).where(table.id == after, table.job_id == job_id)).first()
                if cursor is None:
                    raise NotFound(f"no {after!r} in job {job_id!r}", param="after")
                q = q.where(table.seq < cursor.seq)
            rows = s.scalars(q.order_by(table.seq.desc()).limit(limit + 1)).all()
            return Page([record(r) for r in rows[:limit]], len(rows) > limit)
