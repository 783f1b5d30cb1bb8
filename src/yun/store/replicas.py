"""The replica registry: every replica the controller placed, where it answers, and its engine's secret.

Written only by the active controller; read by every gateway (to route) and by the admin API and
`/health` (to show). A gateway polls `version()` (one cheap aggregate) a few times a second and reloads
`live()` only when it moved, so a change reaches every gateway within a second without a message bus.

Engine secrets are sealed at rest like upstream keys (store/secrets.py); records carry them in clear,
left out of their repr so a logged record never shows one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update

from yun.store.db import Database
from yun.store.orm import ReplicaRow
from yun.store.secrets import SecretBox

__all__ = ["RegistryEntry", "ReplicaRepository"]

_T = cast(Table, ReplicaRow.__table__)

LIVE_STATES = ("starting", "ready", "restarting", "draining")
"""States of a replica that holds (or is about to hold) compute. `failed` and `stopped` hold none."""


@dataclass(frozen=True)
class RegistryEntry:
    id: str
    deployment_id: str
    generation: int
    backend: str
    shape: str
    node: str
    endpoint: str | None
    state: str
    error: str | None
    restarts: int
    created_at: datetime
    ready_at: datetime | None
    stopped_at: datetime | None
    updated_at: datetime
    secret: str = field(repr=False, default="")
    adapters: tuple[str, ...] = ()
    """LoRA adapter files its engine loaded, in order: a fine-tuned model's id on it is its position."""


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time here is UTC."""
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


class ReplicaRepository:
    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._box = secrets

    def _entry(self, row: Any) -> RegistryEntry:
        return RegistryEntry(
            id=row.id,
            deployment_id=row.deployment_id,
            generation=row.generation,
            backend=row.backend,
            shape=row.shape,
            node=row.node,
            endpoint=row.endpoint,
            state=row.state,
            error=row.error,
            restarts=row.restarts,
            created_at=cast(datetime, _aware(row.created_at)),
            ready_at=_aware(row.ready_at),
            stopped_at=_aware(row.stopped_at),
            updated_at=cast(datetime, _aware(row.updated_at)),
            secret=self._box.open(row.secret) or "",
            adapters=tuple(row.adapters or ()),
        )

    def add(
        self,
        replica_id: str,
        deployment_id: str,
        generation: int,
        backend: str,
        shape: str,
        secret: str,
        adapters: tuple[str, ...] = (),
    ) -> RegistryEntry:
        """Record a replica about to be placed (state `starting`): written before the backend is asked,
        so a controller that dies meanwhile leaves a row its successor finds and reconciles."""
        now = datetime.now(UTC)
        with self._db.engine.begin() as c:
            c.execute(
                insert(_T).values(
                    id=replica_id,
                    deployment_id=deployment_id,
                    generation=generation,
                    backend=backend,
                    shape=shape,
                    node="",
                    endpoint=None,
                    secret=self._box.seal(secret),
                    state="starting",
                    error=None,
                    restarts=0,
                    created_at=now,
                    ready_at=None,
                    stopped_at=None,
                    updated_at=now,
                    adapters=list(adapters),
                )
            )
        entry = self.get(replica_id)
        assert entry is not None
        return entry

    def update(self, replica_id: str, **changes: Any) -> None:
        """Set fields (`state`, `endpoint`, `node`, `error`, `restarts`, `ready_at`, `stopped_at`); every
        change moves `updated_at`, which is what gateways watch."""
        allowed = {"state", "endpoint", "node", "error", "restarts", "ready_at", "stopped_at"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not a registry field: {sorted(unknown)}")
        with self._db.engine.begin() as c:
            c.execute(update(_T).where(_T.c.id == replica_id).values(**changes, updated_at=datetime.now(UTC)))

    def get(self, replica_id: str) -> RegistryEntry | None:
        with self._db.reader.connect() as c:
            row = c.execute(select(_T).where(_T.c.id == replica_id)).first()
        return None if row is None else self._entry(row)

    def live(self) -> list[RegistryEntry]:
        """Every replica that holds or is about to hold compute, oldest first."""
        with self._db.reader.connect() as c:
            rows = c.execute(select(_T).where(_T.c.state.in_(LIVE_STATES)).order_by(_T.c.created_at, _T.c.id)).all()
        return [self._entry(r) for r in rows]

    def of_deployment(self, deployment_id: str, *, include_stopped: bool = False) -> list[RegistryEntry]:
        query = select(_T).where(_T.c.deployment_id == deployment_id)
        if not include_stopped:
            query = query.where(_T.c.state != "stopped")
        with self._db.reader.connect() as c:
            rows = c.execute(query.order_by(_T.c.created_at, _T.c.id)).all()
        return [self._entry(r) for r in rows]

    def version(self) -> tuple[int, datetime | None]:
        """(row count, latest change): moves whenever anything in the registry does."""
        with self._db.reader.connect() as c:
            count, latest = c.execute(select(func.count(), func.max(_T.c.updated_at))).one()
        return int(count), _aware(latest)
