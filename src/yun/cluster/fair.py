"""Requests waiting for a replica slot, shared out across tenants by the tokens they ask for.

A llama.cpp replica runs a fixed number of sequences at once (its slots) and queues the rest itself, first
come first served: one tenant's burst of 500 requests would sit ahead of everyone else's next request for
minutes. So the gateway gives a replica no more requests than it has slots and keeps the rest here, one
queue per tenant, and shares freed slots out by deficit round-robin (DRR) on each request's token
estimate (its prompt plus the output it may produce: what it will hold the replica for): each turn a
tenant is credited `quantum x weight` tokens and is served while its credit covers its next request. A
tenant sending 10x another's traffic, or requests 10x as long, does not get 10x the replica; a tenant with
a higher weight (a per-organization setting: `yun orgs weight`) gets proportionally more when both wait.
Which slot a tenant may take, if any, is the pool's business (cluster/share.py: headroom, tenants kept
apart); a tenant that may take none now is passed over and keeps its place.

Fairness is per gateway: each gateway shares out the slots its own requests wait for. Across several
gateways behind a load balancer it holds as far as the balancer spreads each tenant's traffic.

Touched only from the event loop, so no lock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


QUANTUM = 64
"""Tokens credited per turn at weight 1. Smaller than any real request, so turns interleave request by
request (a large quantum would let a tenant's many small requests all run in one turn); the rounds in
which nobody could be served are credited at once (see `grant`), so a small quantum costs no loops."""


class FairQueue(Generic[T]):
    def __init__(self, quantum: int = QUANTUM) -> None:
        self._tenants: OrderedDict[str, deque[tuple[asyncio.Future[T], int]]] = OrderedDict()
        self._deficit: dict[str, float] = {}
        self._weights: dict[str, float] = {}
        self.quantum = quantum
        self._size = 0

    def set_weights(self, weights: dict[str, float]) -> None:
        """Per-tenant weights (absent: 1)."""
        self._weights = weights

    def __len__(self) -> int:
        """Waiters queued."""
        return self._size

    def waiting(self) -> dict[str, int]:
        """Queued waiters per tenant, for metrics and tests."""
        return {tenant: len(q) for tenant, q in self._tenants.items()}

    def push(self, tenant: str, cost: int = 1) -> asyncio.Future[T]:
        """Queue a waiter for `tenant` whose request may use `cost` tokens; it is resolved with a slot by
        `grant`, or cancelled by its owner."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._tenants.get(tenant)
        if queue is None:
            self._tenants[tenant] = queue = deque()
            self._deficit[tenant] = 0.0
        queue.append((future, max(1, cost)))
        self._size += 1
        return future

    def discard(self, tenant: str, future: asyncio.Future[T]) -> None:
        """Forget a waiter that stopped waiting (its client left, its wait timed out)."""
        queue = self._tenants.get(tenant)
        if queue is None:
            return
        for i, (waiting, _) in enumerate(queue):
            if waiting is future:
                del queue[i]
                break
        else:
            return  # already taken off by `grant`
        self._size -= 1
        if not queue:
            self._forget(tenant)

    def _forget(self, tenant: str) -> None:
        """A tenant with nothing queued keeps no credit (DRR: idle time earns no burst later)."""
        del self._tenants[tenant]
        self._deficit.pop(tenant, None)

    def grant_to(self, choose: Callable[[str], T | None]) -> tuple[str, T] | None:
        """Give the oldest live waiter of the tenant whose turn it is the slot `choose` picks for that
        tenant; returns (tenant, slot), or None if nobody waits to whom `choose` gives one.

        The tenant at the front is served while its credit covers its next request; otherwise its turn ends:
        it is credited for its next turn and goes to the back. A tenant for whom `choose` has no slot (see
        cluster/share.py) is passed over without credit and keeps its place in the rotation. Every turn
        adds credit to a tenant that has a slot, so the loop ends."""
        slots: dict[str, T | None] = {}

        def slot_for(tenant: str) -> T | None:
            if tenant not in slots:
                slots[tenant] = choose(tenant)
            return slots[tenant]

        self._skip_idle_rounds(lambda tenant: slot_for(tenant) is not None)
        passed = 0  # tenants without a slot passed over in a row
        while self._tenants and passed < len(self._tenants):
            tenant, queue = next(iter(self._tenants.items()))
            future, cost = queue[0]
            if future.done():  # a waiter whose client left or whose wait timed out is skipped
                queue.popleft()
                self._size -= 1
                if not queue:
                    self._forget(tenant)
                continue
            slot = slot_for(tenant)
            if slot is None:
                self._tenants.move_to_end(tenant)
                passed += 1
                continue
            passed = 0
            if self._deficit[tenant] < cost:
                self._deficit[tenant] += self.quantum * self._weight(tenant)
                self._tenants.move_to_end(tenant)
                continue
            queue.popleft()
            self._size -= 1
            self._deficit[tenant] -= cost
            if not queue:
                self._forget(tenant)
            elif self._deficit[tenant] < queue[0][1]:
                self._tenants.move_to_end(tenant)  # its credit is spent: the next tenant's turn
            future.set_result(slot)
            return tenant, slot
        return None

    def _skip_idle_rounds(self, eligible: Callable[[str], bool]) -> None:
        """Credit at once the whole rounds in which no (eligible) tenant's credit would cover its next
        request: what DRR would do turn by turn, without the turns."""
        rounds = None
        for tenant, queue in self._tenants.items():
            if not eligible(tenant):
                continue
            need = queue[0][1] - self._deficit[tenant]
            per_round = self.quantum * self._weight(tenant)
            r = 0 if need <= 0 else int(need // per_round)  # whole rounds that still leave it short or even
            rounds = r if rounds is None else min(rounds, r)
        if rounds:
            for tenant in self._tenants:
                if not eligible(tenant):
                    continue
                self._deficit[tenant] += (rounds - 1) * self.quantum * self._weight(tenant) if rounds > 1 else 0

    def _weight(self, tenant: str) -> float:
        return max(0.01, self._weights.get(tenant, 1.0))

    def fail_all(self, exc: BaseException) -> None:
        """Wake every waiter with `exc` (the deployment is going away)."""
        tenants, self._tenants, self._size = self._tenants, OrderedDict(), 0
        self._deficit.clear()
        for queue in tenants.values():
            for future, _ in queue:
                if not future.done():
                    future.set_exception(exc)
