"""Which free slot of a pool's replicas a tenant's request may take: headroom, and tenants kept apart.

A tenant that holds no slot of the pool may always take a free one, preferring a replica where no other
tenant runs, then the least busy: every tenant progresses. A tenant that already holds slots there, while
another tenant is active (holds slots, or asked for one or gave one back within HEADROOM_WINDOW_S), is
held to one of two rules:

- **Apart** (two or more ready replicas of ours, and no more active tenants than that): it takes slots only
  on replicas where no other tenant runs, and leaves one idle replica for each other active tenant that
  holds none. On a CPU engine a step costs in proportion to the tokens in its batch: a request that shares
  a replica with a busy tenant's streams waits for their tokens at every step (bench/fairness.py: a quiet
  tenant's time to first token beside a neighbour's 3 streams on one llama.cpp replica is ~2x its time
  alone, engine called directly). With the replicas split among the active tenants, each one's steps are
  its own; the busy tenant meanwhile keeps the replicas it has, not the whole pool.
- **Headroom** (otherwise: one replica, or more active tenants than replicas): it does not take the pool's
  last free slot. That slot stays free for the other tenant's next request, which then starts at once
  instead of waiting for a long generation of the busy tenant to end (on a replica of 4 slots, a tenant
  alone keeps all 4; beside others, 3).

A tenant's window runs from its request's end, not its start: counted from the start, a conversation whose
answers take longer than the window (a 0.5B model's 32 tokens on a busy CPU) lost its place to the busy
tenant between two of its requests, and its next one waited for a whole generation. Neither rule holds
back an external upstream (it has no slots of ours).

The replicas' tenants are counted on their shared `Slots`, so a base deployment's pool and its
fine-tunes' (the same replicas) see each other's tenants; who is active is each pool's own.

Touched only from the event loop, so no lock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from yun.cluster.endpoint import Endpoint

__all__ = ["HEADROOM_WINDOW_S", "Tenants"]

HEADROOM_WINDOW_S = 2.0
"""A tenant that asked a pool for a slot this recently counts as active there: long enough to span the
gap between the requests of a conversation or an agent's loop, short enough that a tenant gone quiet
soon stops costing a busy one."""


class Tenants:
    """The tenants of one pool: the slots each holds there and when each was last active."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        """Slots each tenant holds here (leases in flight, and slots granted to its waiters)."""
        self._seen: dict[str, float] = {}
        """When each tenant last asked for a slot or gave one back (monotonic), kept for the window after
        that while it holds none."""

    def saw(self, tenant: str) -> None:
        self._seen[tenant] = time.monotonic()

    def took(self, tenant: str, replica: Endpoint) -> None:
        replica.take(tenant)
        self.held[tenant] = self.held.get(tenant, 0) + 1

    def gave_back(self, tenant: str, replica: Endpoint) -> None:
        replica.give_back(tenant)
        held = self.held.get(tenant, 0) - 1
        if held > 0:
            self.held[tenant] = held
        else:
            self.held.pop(tenant, None)

    def slot_for(self, tenant: str, replicas: Sequence[Endpoint]) -> Endpoint | None:
        """The replica whose free slot `tenant`'s next request may take, or None if it must wait."""
        ready = [r for r in replicas if r.healthy and r.engine is not None]
        free = [r for r in ready if r.slots is None or r.shared.busy < r.slots]
        if not free:
            return None
        if not self.held.get(tenant) or any(r.slots is None for r in ready):
            return _best(free, tenant)
        active, needy = self._others(tenant)
        if not active:
            return _best(free, tenant)
        if len(ready) >= 2 and active + 1 <= len(ready):  # apart
            own = [r for r in free if r.shared.busy and not r.shared.others(tenant)]
            if own:
                return min(own, key=_busy)
            idle = [r for r in free if not r.shared.busy]
            return idle[0] if len(idle) > needy else None
        # Headroom: the last free slot is kept for another tenant that holds none.
        spare = sum(r.slots - r.shared.busy for r in free if r.slots is not None)
        return _best(free, tenant) if spare > 1 or not needy else None

    def _others(self, tenant: str) -> tuple[int, int]:
        """Other tenants active here, and how many of them hold no slot (each may need one at once)."""
        now = time.monotonic()
        active = needy = 0
        for other, seen in list(self._seen.items()):
            if other == tenant:
                continue
            if self.held.get(other):
                active += 1  # its window starts when it gives its last slot back
            elif now - seen <= HEADROOM_WINDOW_S:
                active += 1
                needy += 1
            else:
                del self._seen[other]
        return active, needy


def _busy(replica: Endpoint) -> int:
    return replica.shared.busy


def _best(free: list[Endpoint], tenant: str) -> Endpoint:
    """A replica where no other tenant runs, if there is one, else the least busy."""
    return min(free, key=lambda r: (r.shared.others(tenant) > 0, r.shared.busy))
