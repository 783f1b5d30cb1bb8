"""The request path's writes: reservations, progress, settlements and stored responses, group-committed
on one connection.

Every accepted request writes twice: a hold before the engine runs, a settlement after. Done one
transaction at a time through SQLAlchemy, those two commits cost more CPU than the rest of the gateway
together. Here one raw DB-API connection writes whatever has queued up since its last commit in a
single transaction (a "group commit"): under load dozens of holds and settlements share one commit;
with one request in flight, each still commits alone and at once. A stream that outlasts the progress
interval also records, now and then, the tokens generated so far on its hold, so that crash recovery
can bill them; those records join the same batches, as does a Responses API answer to store (an insert
of its own transaction, through SQLAlchemy on a worker thread, cost that request ~0.5 ms more CPU).

The statements and their invariants are in `sql.py`. Here: no caller hears "done" before the
transaction holding its write has committed; if a batch fails, it is rolled back and each operation is
retried alone, so one bad operation fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from yun.store.db import Database
from yun.store.money import sql
from yun.store.money.records import HoldRecord, HoldRequest, ProgressRecord, ResponseWrite, SettleRecord

__all__ = ["MoneyWriter", "money_writer"]

log = logging.getLogger("yun.store")

T = TypeVar("T")


def money_writer(db: Database) -> MoneyWriter:
    """The one group-committing writer of holds and settlements for `db` (per process), made on first use."""
    return db.writer(MoneyWriter)


_Op = (
    tuple[HoldRequest, None]
    | tuple[HoldRecord, SettleRecord]
    | tuple[ProgressRecord, None]
    | tuple[ResponseWrite, None]
)
_Item = tuple[_Op, "Future[Any]"]


class MoneyWriter:
    """One connection, group commits. `reserve`/`settle`/`record_progress` return futures that complete once
    the write is committed (or failed).

    Where the writes run:
    - PostgreSQL: a writer thread (started on first use) drains a queue, so the event loop never waits
      for a network round trip;
    - SQLite bound to an event loop (`bind_loop`, done by the server): on the loop itself, in a callback
      scheduled for the loop's next turn that writes everything submitted meanwhile. An embedded commit
      (WAL, no fsync) takes less time than handing work to a thread and back, and no second thread
      competes for the GIL on a one-core gateway;
    - otherwise (tools, tests, calls from other threads): at once, in the calling thread.
    """

    def __init__(self, db: Database, max_batch: int = 256) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._pending: list[_Item] = []
        self._raw: Any = None
        self._statements = sql.Statements(db.engine)
        self.commits = 0
        """Transactions committed (for tests and benchmarks: operations / commits = batching achieved)."""
        self.progress_writes = 0
        """Progress records submitted (for tests and benchmarks: the writes streams add to the request path)."""

    def reserve(self, req: HoldRequest) -> Future[HoldRecord]:
        """Hold free tokens and money for one request, durably; the future fails with QuotaExceeded."""
        return self._submit((req, None))

    def settle(self, hold: HoldRecord, rec: SettleRecord) -> Future[bool]:
        """Write the usage record and the charge and release the hold, once. The future's result is
        False if the reservation was already settled."""
        return self._submit((hold, rec))

    def wait(self, future: Future[T]) -> asyncio.Future[T]:
        """An asyncio future for one of this writer's futures, to await on the running loop.

        Where this writer completes its futures on that very loop (an embedded database bound to it),
        the result is handed over directly. `asyncio.wrap_future` would deliver it through
        `call_soon_threadsafe`, which wakes the loop through its self-pipe: a system call and one more
        loop turn per write, twice per request.
        """
        loop = self._loop
        if loop is None or threading.get_ident() != self._loop_thread:
            return asyncio.wrap_future(future)
        waiter: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(partial(_hand_over, waiter))
        return waiter

    def record_progress(self, rec: ProgressRecord) -> Future[bool]:
        """Record an open request's tokens so far on its hold. The future's result is False if the hold
        was settled already (the record is then dropped: the settlement has the final counts)."""
        self.progress_writes += 1
        return self._submit((rec, None))

    def store_response(self, rec: ResponseWrite) -> Future[bool]:
        """Insert a stored response; the future fails if the insert does (a duplicate id, say)."""
        return self._submit((rec, None))

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Write an embedded database's batches on `loop` (call from the loop's thread; None unbinds)."""
        if self._db.embedded:
            self._drain()
            self._loop, self._loop_thread = loop, threading.get_ident() if loop else 0

    def close(self) -> None:
        """Write what is queued, then stop the thread and release the connection."""
        self.bind_loop(None)
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        with self._write_lock:
            self._disconnect()

    def _submit(self, op: _Op) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # running from now on: cannot be cancelled, only completed
        item = (op, future)
        if self._db.embedded:
            if self._loop is not None and threading.get_ident() == self._loop_thread:
                if not self._pending:
                    self._loop.call_soon(self._drain)
                self._pending.append(item)
            else:
                with self._write_lock:
                    self._write([item])
            return future
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="yun-money-writer", daemon=True)
                    self._thread.start()
        self._queue.put(item)
        return future

    def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            with self._write_lock:
                self._write(batch)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._write(batch)
        self._disconnect()

    def _write(self, batch: list[_Item]) -> None:
        try:
            results = self._transaction([op for op, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers below, never lost
            self._disconnect()  # a broken connection must not poison the next batch
            if len(batch) == 1:
                _complete(batch[0][1], exc)
                return
            log.warning("group commit of %d money writes failed (%s); writing them one by one", len(batch), exc)
            for item in batch:
                self._write([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _complete(future, result)

    def _transaction(self, ops: list[_Op]) -> list[object]:
        raw = self._connection()
        cur = raw.cursor()
        s = self._statements
        try:
            if self._db.embedded:
                cur.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade from a read lock to fail later
            results: list[object] = [None] * len(ops)
            for i in self._lock_order(ops):
                first, second = ops[i]
                if second is not None:
                    assert isinstance(first, HoldRecord)
                    results[i] = sql.settle(s, cur, first, second)
                elif isinstance(first, HoldRequest):
                    results[i] = sql.reserve(s, cur, first)
                elif isinstance(first, ResponseWrite):
                    results[i] = sql.store_response(s, cur, first)
                else:
                    assert isinstance(first, ProgressRecord)
                    results[i] = sql.record_progress(s, cur, first)
            if self._db.embedded:
                cur.execute("COMMIT")
            else:
                raw.commit()
        except BaseException:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - the connection is dropped by the caller anyway
                log.debug("rollback failed", exc_info=True)
            raise
        finally:
            cur.close()
        self.commits += 1
        return results

    def _lock_order(self, ops: list[_Op]) -> range | list[int]:
        """The order to run a batch in. On PostgreSQL, by organization: a batch takes row locks (free
        tokens, balance, reservation) org by org, and two gateways whose batches met the same two orgs in
        opposite orders would deadlock (PostgreSQL then aborts one, and its operations are retried one by
        one). Sorted, every batch takes them in one global order. Stable, so one org's operations keep
        the order they were submitted in. SQLite has one write lock for the whole database: no need."""
        if self._db.embedded or len(ops) < 2:
            return range(len(ops))
        return sorted(range(len(ops)), key=lambda i: ops[i][0].org_id)

    def _connection(self) -> Any:
        if self._raw is None:
            # From the pool, so the engine's connect hooks (SQLite pragmas) have run; held for good.
            self._raw = self._db.engine.raw_connection()
        return self._raw

    def _disconnect(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()
            except Exception:  # noqa: BLE001 - it is being thrown away
                log.debug("closing the money writer's connection failed", exc_info=True)


def _complete(future: Future[Any], result: object) -> None:
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _hand_over(waiter: asyncio.Future[T], future: Future[T]) -> None:
    # Runs where the future completed: on the waiter's loop thread (see `MoneyWriter.wait`).
    if waiter.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(future.result())
