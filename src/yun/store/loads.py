"""Gateway loads in the database: the autoscaler's input when there is no Redis.

Each gateway instance owns its rows and rewrites them whole (`publish`) when its load moves, and
refreshes them (`publish` again) while a load stays; a row whose `expires_at` has passed no longer
counts, so the load of a gateway that died fades by itself. Zero loads have no row: an idle cluster
writes nothing.

Times are the gateways' own UTC clocks, as for leases (store/instances.py): processes sharing a
database must agree on the time to well within the TTL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, insert, select

from yun.store.db import Database
from yun.store.orm import GatewayLoadRow

__all__ = ["Load", "LoadRepository"]

_T = cast(Table, GatewayLoadRow.__table__)


@dataclass(frozen=True)
class Load:
    """Requests for one deployment: waiting in a gateway's queue, and running on its replicas."""

    queued: int = 0
    in_flight: int = 0

    def __add__(self, other: Load) -> Load:
        return Load(self.queued + other.queued, self.in_flight + other.in_flight)

    @property
    def busy(self) -> bool:
        return self.queued > 0 or self.in_flight > 0


class LoadRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def publish(self, gateway_id: str, loads: Mapping[str, Load], ttl_s: float) -> None:
        """Replace what `gateway_id` published with `loads` (deployment id -> load; absent or zero: none),
        counting for `ttl_s` from now. One small transaction on this gateway's rows only."""
        now = datetime.now(UTC)
        rows = [
            {
                "gateway_id": gateway_id,
                "deployment_id": deployment_id,
                "queued": load.queued,
                "in_flight": load.in_flight,
                "updated_at": now,
                "expires_at": now + timedelta(seconds=ttl_s),
            }
            for deployment_id, load in loads.items()
            if load.busy
        ]
        with self._db.engine.begin() as c:
            c.execute(delete(_T).where(_T.c.gateway_id == gateway_id))
            if rows:
                c.execute(insert(_T), rows)

    def totals(self, deployment_ids: Sequence[str] | None = None, *, now: datetime | None = None) -> dict[str, Load]:
        """Deployment id -> the sum of the loads live gateways published (absent: none), of every deployment
        or of those given. Rows that have expired are left out, and deleted (only when there are some: the
        usual read takes no write lock)."""
        now = now or datetime.now(UTC)
        out: dict[str, Load] = {}
        stale = False
        q = select(_T.c.deployment_id, _T.c.queued, _T.c.in_flight, _T.c.expires_at)
        if deployment_ids is not None:
            q = q.where(_T.c.deployment_id.in_(list(deployment_ids)))
        with self._db.reader.connect() as c:
            for deployment_id, queued, in_flight, expires_at in c.execute(q):
                if expires_at.tzinfo is None:  # SQLite hands back naive datetimes; every time here is UTC
                    expires_at = expires_at.replace(tzinfo=UTC)
                if expires_at <= now:
                    stale = True
                    continue
                out[deployment_id] = out.get(deployment_id, Load()) + Load(queued, in_flight)
        if stale:
            with self._db.engine.begin() as c:
                c.execute(delete(_T).where(_T.c.expires_at <= now))
        return out
