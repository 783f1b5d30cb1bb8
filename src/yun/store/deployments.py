"""Deployments: what the control plane is asked to run, written by the admin API and the autoscaler, read
by the controller (which makes the replicas match) and by operators.

The replica registry (`replicas`) is written by the controller's registry repository; here it is only
read, for display, and never with its engine secrets: the query names the columns it shows.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from yun.errors import InvalidRequest, NotFound
from yun.store.db import Database
from yun.store.orm import DeploymentRow, ReplicaRow
from yun.store.records import DeploymentRecord, ReplicaRecord
from yun.store.repos import _utc

__all__ = [
    "ENGINES",
    "ENGINE_FIELDS",
    "DeploymentRepository",
    "default_resources",
    "new_deployment_id",
    "replica_bounds",
]

ENGINES = ("llamacpp", "vllm")
ENGINE_FIELDS = frozenset({"engine", "threads", "parallel", "context", "cpus", "gpus", "memory_mb", "command"})
"""What a replica is started with: an update that changes one of these bumps `generation`, and the
controller rolls the replicas over to the new one."""
_UPDATABLE = ENGINE_FIELDS | {"autoscale", "idle_timeout_s"}
_DEFAULTS: dict[str, Any] = {"engine": "llamacpp", "cpus": 1.0, "gpus": 0.0, "memory_mb": 0, "autoscale": {}}
"""What None means for an update of a field that is never null (the others' None: the installation's default)."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
# Replica columns operators may see: every one but `secret`.
_SHOWN = (
    ReplicaRow.id,
    ReplicaRow.deployment_id,
    ReplicaRow.generation,
    ReplicaRow.backend,
    ReplicaRow.shape,
    ReplicaRow.node,
    ReplicaRow.endpoint,
    ReplicaRow.state,
    ReplicaRow.error,
    ReplicaRow.restarts,
    ReplicaRow.created_at,
    ReplicaRow.ready_at,
    ReplicaRow.stopped_at,
)


def _new_id() -> str:
    return f"dep-{uuid.uuid4().hex[:12]}"


def new_deployment_id() -> str:
    """An id for a deployment about to be created (callers that must name it before it exists: its hold)."""
    return _new_id()


def default_resources() -> tuple[float, float, int]:
    """(cpus, gpus, memory_mb) per replica of a deployment created without them."""
    return _DEFAULTS["cpus"], _DEFAULTS["gpus"], _DEFAULTS["memory_mb"]


def replica_bounds(replicas: int | None, min_replicas: int | None, max_replicas: int | None) -> tuple[int, int, int]:
    """(min, desired, max) from whichever of them were given, the others filled in around them: one replica
    by default, `replicas=3` alone is 1..3 running 3, `min=0, max=4` alone runs 1. Errors name the wire
    fields (`replicas`, `min`, `max`)."""
    lo = min_replicas if min_replicas is not None else min(1, 1 if replicas is None else replicas)
    hi = max_replicas if max_replicas is not None else max(lo, 1 if replicas is None else replicas, 1)
    desired = replicas if replicas is not None else min(max(1, lo), hi)
    _check_bounds(lo, desired, hi)
    return lo, desired, hi


def _check_bounds(lo: int, desired: int, hi: int) -> None:
    if lo < 0:
        raise InvalidRequest("min must be 0 or more", param="min")
    if hi < 1:
        raise InvalidRequest("max must be 1 or more", param="max")
    if lo > hi:
        raise InvalidRequest(f"min ({lo}) is over max ({hi})", param="min")
    if not lo <= desired <= hi:
        raise InvalidRequest(f"replicas must be between min ({lo}) and max ({hi}), not {desired}", param="replicas")


def _check_engine(engine: object) -> None:
    if engine not in ENGINES:
        raise InvalidRequest(f"engine must be one of {', '.join(ENGINES)}", param="engine")


def _record(row: DeploymentRow) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        model_id=row.model_id,
        engine=row.engine,
        owner_org=row.owner_org,
        min_replicas=row.min_replicas,
        max_replicas=row.max_replicas,
        desired_replicas=row.desired_replicas,
        cpus=row.cpus,
        gpus=row.gpus,
        memory_mb=row.memory_mb,
        threads=row.threads,
        parallel=row.parallel,
        context=row.context,
        command=None if row.command is None else tuple(row.command),
        autoscale=dict(row.autoscale or {}),
        idle_timeout_s=row.idle_timeout_s,
        generation=row.generation,
        state=row.state,
        message=row.message,
        created_at=_utc(row.created_at) or row.created_at,
        updated_at=_utc(row.updated_at) or row.updated_at,
    )


def _stored(name: str, value: Any) -> Any:
    """A field as its column holds it (a command is a JSON list)."""
    if name == "command" and value is not None:
        command = [str(part) for part in value]
        if any("{secret}" in part for part in command):
            # A command line is readable by every user of the machine: engines find the secret in their
            # environment (YUN_ENGINE_SECRET), and backends refuse a command that would show it.
            raise InvalidRequest(
                "an engine command must not carry {secret}: the engine finds it in YUN_ENGINE_SECRET",
                param="command",
            )
        return command
    if name == "autoscale":
        return dict(value or {})
    return value


class DeploymentRepository:
    """Deployments, one row each. Every change is one transaction that locks the row (PostgreSQL; SQLite
    writers are serialized anyway), so an update and a scale arriving together both land."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reads ------------------------------------------------------------------------------------
    def get(self, deployment_id: str) -> DeploymentRecord | None:
        with self._db.read_session() as s:
            row = s.get(DeploymentRow, deployment_id)
            return None if row is None else _record(row)

    def replicas(self, deployment_id: str) -> list[ReplicaRecord]:
        """The replicas of a deployment that have not stopped (failed ones included, with their error),
        oldest first. Never their secrets."""
        q = (
            select(*_SHOWN)
            .where(ReplicaRow.deployment_id == deployment_id, ReplicaRow.state != "stopped")
            .order_by(ReplicaRow.created_at, ReplicaRow.id)
        )
        with self._db.read_session() as s:
            rows = s.execute(q).all()
        return [
            ReplicaRecord(
                **{
                    **r._asdict(),
                    "created_at": _utc(r.created_at) or r.created_at,
                    "ready_at": _utc(r.ready_at),
                    "stopped_at": _utc(r.stopped_at),
                }
            )
            for r in rows
        ]

    def ready_counts(self, deployment_ids: Sequence[str] | None = None) -> dict[str, int]:
        """How many replicas of each deployment are ready (absent: none), in one query."""
        q = select(ReplicaRow.deployment_id, func.count()).where(ReplicaRow.state == "ready")
        if deployment_ids is not None:
            q = q.where(ReplicaRow.deployment_id.in_(list(deployment_ids)))
        with self._db.read_session() as s:
            return {dep: int(n) for dep, n in s.execute(q.group_by(ReplicaRow.deployment_id))}

    def list(self, *, model_id: str | None = None, owner_org: str | None = None) -> list[DeploymentRecord]:
        """Every deployment, oldest first; only those of one model and/or one owner organization if given."""
        q = select(DeploymentRow).order_by(DeploymentRow.created_at, DeploymentRow.id)
        if model_id is not None:
            q = q.where(DeploymentRow.model_id == model_id)
        if owner_org is not None:
            q = q.where(DeploymentRow.owner_org == owner_org)
        with self._db.read_session() as s:
            return [_record(r) for r in s.scalars(q)]

    # -- writes -----------------------------------------------------------------------------------
    def create(
        self,
        model_id: str,
        *,
        deployment_id: str | None = None,
        engine: str = _DEFAULTS["engine"],
        owner_org: str | None = None,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        cpus: float = _DEFAULTS["cpus"],
        gpus: float = _DEFAULTS["gpus"],
        memory_mb: int = _DEFAULTS["memory_mb"],
        threads: int | None = None,
        parallel: int | None = None,
        context: int | None = None,
        command: Sequence[str] | None = None,
        autoscale: Mapping[str, Any] | None = None,
        idle_timeout_s: float | None = None,
    ) -> DeploymentRecord:
        """A new deployment at generation 1. Whether the model and the owner exist is the caller's to check
        (the store does not know the catalog); the replica counts are checked here (`replica_bounds`)."""
        if deployment_id is not None and not _ID.match(deployment_id):
            raise InvalidRequest(
                "deployment ids are 1-80 letters, digits and . _ -, starting with a letter or digit", param="id"
            )
        _check_engine(engine)
        lo, desired, hi = replica_bounds(replicas, min_replicas, max_replicas)
        now = datetime.now(UTC)
        row = DeploymentRow(
            id=deployment_id or _new_id(),
            model_id=model_id,
            engine=engine,
            owner_org=owner_org,
            min_replicas=lo,
            max_replicas=hi,
            desired_replicas=desired,
            cpus=cpus,
            gpus=gpus,
            memory_mb=memory_mb,
            threads=threads,
            parallel=parallel,
            context=context,
            command=_stored("command", command),
            autoscale=_stored("autoscale", autoscale),
            idle_timeout_s=idle_timeout_s,
            generation=1,
            state="active",
            message="",
            created_at=now,
            updated_at=now,
        )
        try:
            with self._db.session() as s, s.begin():
                s.add(row)
                s.flush()
                return _record(row)
        except IntegrityError as exc:
            raise InvalidRequest(f"a deployment {row.id!r} already exists", param="id") from exc

    def _active(self, s: Session, deployment_id: str) -> DeploymentRow:
        row = s.get(DeploymentRow, deployment_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no deployment {deployment_id!r}")
        if row.state == "deleting":
            raise InvalidRequest(f"deployment {deployment_id!r} is being deleted")
        return row

    def update(self, deployment_id: str, **changes: Any) -> DeploymentRecord:
        """Change how replicas run or scale automatically (`ENGINE_FIELDS`, `autoscale`, `idle_timeout_s`).
        None puts a field back to its default (for engine arguments, the installation's). A change of an
        engine field bumps `generation` once; setting a field to the value it has changes nothing."""
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise InvalidRequest(f"cannot change {unknown[0]!r} of a deployment", param=unknown[0])
        if changes.get("engine") is not None:
            _check_engine(changes["engine"])
        with self._db.session() as s, s.begin():
            row = self._active(s, deployment_id)
            moved = False
            for name, value in changes.items():
                value = _stored(name, _DEFAULTS.get(name) if value is None else value)
                if getattr(row, name) == value:
                    continue
                setattr(row, name, value)
                moved = moved or name in ENGINE_FIELDS
            if moved:
                row.generation += 1
            if changes:
                row.updated_at = datetime.now(UTC)
            return _record(row)

    def scale(
        self,
        deployment_id: str,
        replicas: int | None = None,
        *,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        if_desired: int | None = None,
    ) -> DeploymentRecord:
        """Set the desired replica count, its bounds, or both. New bounds without a count clamp the desired
        count into them; a count outside the bounds it would have is refused. No new generation: the same
        replicas, more or fewer of them.

        `if_desired`: change nothing unless the desired count is still this (the autoscaler decides from
        what it read: an operator's or the biller's change in between wins). The record is returned
        either way."""
        if replicas is None and min_replicas is None and max_replicas is None:
            raise InvalidRequest("give replicas, min or max", param="replicas")
        with self._db.session() as s, s.begin():
            row = self._active(s, deployment_id)
            if if_desired is not None and row.desired_replicas != if_desired:
                return _record(row)
            lo = row.min_replicas if min_replicas is None else min_replicas
            hi = row.max_replicas if max_replicas is None else max_replicas
            desired = replicas if replicas is not None else min(max(row.desired_replicas, lo), hi)
            _check_bounds(lo, desired, hi)
            row.min_replicas, row.desired_replicas, row.max_replicas = lo, desired, hi
            row.updated_at = datetime.now(UTC)
            return _record(row)

    def roll(self, model_id: str) -> Sequence[str]:
        """A new generation for every llama.cpp deployment of `model_id` (its fine-tunes' adapters changed):
        the controller replaces their replicas, new ready before old drained. Returns the ids rolled."""
        with self._db.session() as s, s.begin():
            rows = s.scalars(
                select(DeploymentRow).where(
                    DeploymentRow.model_id == model_id,
                    DeploymentRow.engine != "vllm",
                    DeploymentRow.state != "deleting",
                )
            ).all()
            for row in rows:
                row.generation += 1
                row.updated_at = datetime.now(UTC)
            return [row.id for row in rows]

    def set_message(self, deployment_id: str, message: str) -> bool:
        """Say why a deployment is not running as asked (the controller's words; "" when it is). False if
        the deployment is gone."""
        with self._db.session() as s, s.begin():
            row = s.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None:
                return False
            row.message = message
            return True

    def mark_deleting(self, deployment_id: str) -> DeploymentRecord:
        """Ask for a deployment to go: the controller stops its replicas, then `delete`s it. Idempotent."""
        with self._db.session() as s, s.begin():
            row = s.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no deployment {deployment_id!r}")
            if row.state != "deleting":
                row.state = "deleting"
                row.updated_at = datetime.now(UTC)
            return _record(row)

    def delete(self, deployment_id: str) -> bool:
        """Remove a deployment's row (the controller, once it stopped every replica); False if there was none."""
        with self._db.session() as s, s.begin():
            row = s.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None:
                return False
            s.delete(row)
            return True
