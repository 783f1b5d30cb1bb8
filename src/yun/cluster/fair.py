"""Requests waiting for a replica slot, served round-robin across tenants.

A llama.cpp replica runs a fixed number of sequences at once (its slots) and queues the rest itself, first
come first served: one tenant's burst of 500 requests would sit ahead of everyone else's next request for
minutes. So the gateway gives a replica no more requests than it has slots and keeps the rest here, one
queue per tenant, and each freed slot goes to the next tenant in turn. A tenant with one request waiting is
served after at most one request of every other waiting tenant, however many those have queued.

Touched only from the event loop, so no lock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._tenants: OrderedDict[str, deque[asyncio.Future[T]]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        """Waiters queued."""
        return self._size

    def waiting(self) -> dict[str, int]:
        """Queued waiters per tenant, for metrics and tests."""
        return {tenant: len(q) for tenant, q in self._tenants.items()}

    def push(self, tenant: str) -> asyncio.Future[T]:
        """Queue a waiter for `tenant`; it is resolved with a slot by `grant`, or cancelled by its owner."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._tenants.get(tenant)
        if queue is None:
            self._tenants[tenant] = queue = deque()
        queue.append(future)
        self._size += 1
        return future

    def discard(self, tenant: str, future: asyncio.Future[T]) -> None:
        """Forget a waiter that stopped waiting (its client left, its wait timed out)."""
        queue = self._tenants.get(tenant)
        if queue is None:
            return
        try:
            queue.remove(future)
        except ValueError:
            return  # already taken off by `grant`
        self._size -= 1
        if not queue:
            del self._tenants[tenant]

    def grant(self, slot: T) -> bool:
        """Give `slot` to the oldest live waiter of the tenant whose turn it is; False if nobody waits."""
        while self._tenants:
            tenant, queue = next(iter(self._tenants.items()))
            future = queue.popleft()
            self._size -= 1
            if queue:
                self._tenants.move_to_end(tenant)  # next turn goes to the next tenant
            else:
                del self._tenants[tenant]
            if not future.done():  # a waiter whose client left or whose wait timed out is skipped
                future.set_result(slot)
                return True
        return False

    def fail_all(self, exc: BaseException) -> None:
        """Wake every waiter with `exc` (the deployment is going away)."""
        tenants, self._tenants, self._size = self._tenants, OrderedDict(), 0
        for queue in tenants.values():
            for future in queue:
                if not future.done():
                    future.set_exception(exc)
