"""A replica as a gateway's pool routes to it (`Endpoint`), and the replica's slots (`Slots`), which every
pool on the replica shares (a base deployment's and its fine-tunes': see cluster/router.py).

Touched only from the event loop, so no lock.
"""

from __future__ import annotations

import asyncio
import time

from yun.engines import Engine

__all__ = ["Endpoint", "Slots"]

_SUSPECT_S = 5.0
"""How long a replica that refused a request stays out of rotation here, whatever the registry says."""


class Slots:
    """One replica's busy slots as this gateway counts them (per gateway, like least-outstanding routing),
    shared by the endpoints of every pool that routes to the replica: a base deployment's and each of its
    fine-tunes'. Invariants: `busy` is the sum of those endpoints' `outstanding`, and of `tenants`."""

    __slots__ = ("busy", "tenants")

    def __init__(self) -> None:
        self.busy = 0
        self.tenants: dict[str, int] = {}
        """Slots taken per tenant (cluster/share.py keeps tenants apart with it)."""

    def others(self, tenant: str) -> int:
        """Slots taken by tenants other than `tenant`."""
        return self.busy - self.tenants.get(tenant, 0)


class Endpoint:
    """One replica as one pool routes to it: its engine client and the requests in flight there.

    `outstanding` counts this endpoint's requests only (its pool's: a fine-tune's endpoint has its own
    engine client, with its adapter); `shared.busy` counts the replica's slots taken by every pool on it,
    and is what routing and the slot limit look at."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        slots: int | None,
        *,
        replica_id: str = "",
        address: str = "",
        node: str = "",
        state: str = "ready",
        restarts: int = 0,
        shared: Slots | None = None,
    ) -> None:
        self.name = name
        self.address = address
        """Where the engine answers (never shown to tenants)."""
        self.engine: Engine | None = engine
        self.slots = slots
        """Requests the engine runs at once; None for an external server (it queues or refuses by itself)."""
        self.replica_id = replica_id
        self.node = node
        self.state = state
        self.restarts = restarts
        self.healthy = state == "ready"
        self.outstanding = 0
        self.shared = shared or Slots()
        self.failures = 0
        self.retired = False
        self.suspect_until = 0.0

    def take(self, tenant: str) -> None:
        """A request of this endpoint's pool, for `tenant`, takes one of the replica's slots."""
        self.outstanding += 1
        self.shared.busy += 1
        tenants = self.shared.tenants
        tenants[tenant] = tenants.get(tenant, 0) + 1

    def give_back(self, tenant: str) -> None:
        self.outstanding -= 1
        self.shared.busy -= 1
        tenants = self.shared.tenants
        left = tenants.get(tenant, 0) - 1
        if left > 0:
            tenants[tenant] = left
        else:
            tenants.pop(tenant, None)

    def suspect(self) -> None:
        self.healthy = False
        self.suspect_until = time.monotonic() + _SUSPECT_S

    def retire(self) -> None:
        """Take it out of rotation; its engine client closes once the requests on it have ended."""
        self.retired = True
        self.healthy = False
        self.release()

    def release(self) -> None:
        if self.outstanding == 0 and self.engine is not None:
            engine, self.engine = self.engine, None
            asyncio.get_running_loop().create_task(engine.aclose())
