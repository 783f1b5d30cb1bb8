"""Gateway instances and their leases.

Every `yun serve` process registers a fresh instance id and renews its lease while it runs; the holds
it takes carry that id. A hold may be settled by anyone but its owner only once the owner is dead:
its lease has expired (it stopped renewing: crashed, killed, cut off) or, for a hold whose owner has
no row (holds written before leases existed), once the hold is older than any request can run.

Times are the gateways' own UTC clocks: gateways sharing a database must agree on the time to well
within a lease (NTP does far better than the seconds a lease lasts).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, insert, select, update

from yun.store.db import Database
from yun.store.orm import GatewayInstanceRow, ReservationRow

__all__ = ["InstanceRecord", "InstanceRepository", "new_instance_id"]

log = logging.getLogger("yun.store")

_G = cast(Table, GatewayInstanceRow.__table__)
_R = cast(Table, ReservationRow.__table__)


def new_instance_id() -> str:
    return f"gwi_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    name: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime


class InstanceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def register(self, instance_id: str, name: str, host: str, pid: int, lease_s: float) -> None:
        """Record a new running instance whose lease lasts `lease_s` from now."""
        now = datetime.now(UTC)
        with self._db.engine.begin() as c:
            c.execute(
                insert(_G).values(
                    id=instance_id,
                    name=name[:200],
                    host=host[:255],
                    pid=pid,
                    started_at=now,
                    heartbeat_at=now,
                    expires_at=now + timedelta(seconds=lease_s),
                )
            )

    def renew(self, instance_id: str, lease_s: float) -> bool:
        """Extend the lease to `lease_s` from now. False if the row is gone: another gateway took this one
        for dead (it had not renewed in time) and forgot it; holds it had open may then have been settled
        as interrupted meanwhile (never twice). The caller registers again."""
        now = datetime.now(UTC)
        with self._db.engine.begin() as c:
            moved = c.execute(
                update(_G)
                .where(_G.c.id == instance_id)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=lease_s))
            ).rowcount
        return bool(moved == 1)

    def end(self, instance_id: str) -> None:
        """A clean shutdown: the instance is gone and holds nothing (its holds were settled first)."""
        with self._db.engine.begin() as c:
            c.execute(delete(_G).where(_G.c.id == instance_id))

    def get(self, instance_id: str) -> InstanceRecord | None:
        with self._db.reader.connect() as c:
            r = c.execute(select(_G).where(_G.c.id == instance_id)).first()
        return None if r is None else InstanceRecord(**r._mapping)

    def forget_dead(self, now: datetime | None = None, *, exclusive_of: str | None = None) -> int:
        """Delete rows of dead instances (expired leases, or with `exclusive_of` every instance but that
        one) that no longer own an open hold. Run after recovery settled their holds. Reads first, so
        that the usual case (nothing to forget) takes no write lock (on SQLite, the request path's)."""
        now = now or datetime.now(UTC)
        owning = select(_R.c.gateway_id).where(_R.c.settled_at.is_(None))
        dead = _G.c.id != exclusive_of if exclusive_of is not None else _G.c.expires_at < now
        with self._db.reader.connect() as c:
            if c.execute(select(_G.c.id).where(dead, _G.c.id.not_in(owning)).limit(1)).first() is None:
                return 0
        with self._db.engine.begin() as c:
            return int(c.execute(delete(_G).where(dead, _G.c.id.not_in(owning))).rowcount)
