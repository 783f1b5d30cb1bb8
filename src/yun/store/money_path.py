"""The request path's writes: reservations, progress and settlements, group-committed on one connection.

Every accepted request writes twice: a hold before the engine runs, a settlement after. Done one
transaction at a time through SQLAlchemy, those two commits cost more CPU than the rest of the gateway
together. Here one raw DB-API connection writes whatever has queued up since its last commit in a
single transaction (a "group commit"): under load dozens of holds and settlements share one commit;
with one request in flight, each still commits alone and at once. A stream that outlasts the progress
interval also records, now and then, the tokens generated so far on its hold, so that crash recovery
can bill them; those records join the same batches.

Invariants (ARCHITECTURE.md, "Money invariants") are those of `money.py`, statement by statement:
- a hold is a guarded `UPDATE ... WHERE balance - held >= :amount` (atomic on SQLite and PostgreSQL);
  a refused hold undoes its free-token hold in the same transaction, so other operations of the
  batch are unaffected;
- a settlement starts by flipping `settled_at` from NULL: only the transaction that flipped it writes
  the usage record, the charge and the rollup;
- a progress record touches only the open hold's own counts (`... AND settled_at IS NULL`): it moves
  no money, and one that lands after the settlement changes nothing;
- no caller hears "done" before the transaction holding its write has committed; if a batch fails,
  it is rolled back and each operation is retried alone, so one bad operation fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import DateTime

from yun.errors import QuotaExceeded

if TYPE_CHECKING:
    from yun.store.db import Database

__all__ = ["HoldRecord", "HoldRequest", "MoneyWriter", "ProgressRecord", "ROLLUP_SUMS", "SettleRecord"]

log = logging.getLogger("yun.store")

T = TypeVar("T")

ROLLUP_SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "free_tokens",
    "input_cost",
    "cached_input_cost",
    "output_cost",
    "cost",
)

# Plain SQL, the same on SQLite and PostgreSQL (both speak INSERT ... ON CONFLICT); `:name` binds are
# rewritten once to the driver's style. Built from constants only, never from input.
_SQL = {
    "ensure_balance": (
        "INSERT INTO balances (org_id, balance, held) VALUES (:org, 0, 0) ON CONFLICT (org_id) DO NOTHING"
    ),
    "balance_read": "SELECT balance, held FROM balances WHERE org_id = :org",
    "hold": "UPDATE balances SET held = held + :amount WHERE org_id = :org AND balance - held >= :amount",
    "reserve": (
        "INSERT INTO reservations (request_id, org_id, key_id, model_id, endpoint, amount, free_tokens, free_month,"
        " price_version, gateway_id, created_at) VALUES (:request_id, :org, :key_id, :model_id, :endpoint, :amount,"
        " :free_tokens, :free_month, :price_version, :gateway_id, :now)"
    ),
    "free_row": (
        "INSERT INTO free_usage (org_id, model_id, month, used, held) VALUES (:org, :model_id, :month, 0, 0)"
        " ON CONFLICT (org_id, model_id, month) DO NOTHING"
    ),
    "free_read": "SELECT used, held FROM free_usage WHERE org_id = :org AND model_id = :model_id AND month = :month",
    "free_hold": (
        "UPDATE free_usage SET held = held + :grant WHERE org_id = :org AND model_id = :model_id AND month = :month"
        " AND used + held + :grant <= :allowance"
    ),
    "free_release": (
        "UPDATE free_usage SET held = held - :grant WHERE org_id = :org AND model_id = :model_id AND month = :month"
    ),
    "flip": "UPDATE reservations SET settled_at = :now WHERE request_id = :request_id AND settled_at IS NULL",
    "progress": (
        "UPDATE reservations SET progress_prompt_tokens = :prompt_tokens, progress_cached_tokens = :cached_tokens,"
        " progress_completion_tokens = :completion_tokens WHERE request_id = :request_id AND settled_at IS NULL"
    ),
    "free_settle": (
        "UPDATE free_usage SET held = held - :held, used = used + :used"
        " WHERE org_id = :org AND model_id = :model_id AND month = :month"
    ),
    "charge_balance": "UPDATE balances SET balance = balance - :cost, held = held - :amount WHERE org_id = :org",
    "charge": (
        "INSERT INTO ledger_entries (org_id, kind, amount, reference, note, created_at)"
        " VALUES (:org, 'charge', :amount, :request_id, :model_id, :now)"
    ),
    "cover": (
        "INSERT INTO ledger_entries (org_id, kind, amount, reference, note, created_at)"
        " VALUES (:org, 'internal', :amount, :request_id, :model_id, :now)"
    ),
    "usage": (
        "INSERT INTO usage_records (request_id, org_id, key_id, model_id, endpoint, replica, prompt_tokens,"
        " completion_tokens, cached_tokens, free_tokens, status, latency_ms, ttft_ms, price_version, cost,"
        " created_at) VALUES (:request_id, :org, :key_id, :model_id, :endpoint, :replica, :prompt_tokens,"
        " :completion_tokens, :cached_tokens, :free_tokens, :status, :latency_ms, :ttft_ms, :price_version, :cost,"
        " :now)"
    ),
    "rollup": (
        "INSERT INTO usage_rollups (org_id, model_id, day, "  # noqa: S608 - constant column names
        + ", ".join(ROLLUP_SUMS)
        + ") VALUES (:org, :model_id, :day, "
        + ", ".join(f":{k}" for k in ROLLUP_SUMS)
        + ") ON CONFLICT (org_id, model_id, day) DO UPDATE SET "
        + ", ".join(f"{k} = usage_rollups.{k} + excluded.{k}" for k in ROLLUP_SUMS)
    ),
}


def _usd(nanodollars: int) -> str:
    """$1.50, $0.0068, $0.000004: cents always, further digits only as many as the amount has."""
    whole, frac = divmod(abs(nanodollars), 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0").ljust(2, "0")
    return f"{'-' if nanodollars < 0 else ''}${whole:,}.{digits}"


def quota_message(req: HoldRequest, needed: int, balance: int, held: int) -> str:
    """What a refused hold tells the tenant: what it needed, what was available, how to need less."""
    available = balance - held
    tokens = (
        f" (its maximum cost: {req.prompt_tokens:,} prompt tokens + max_tokens {req.max_output_tokens:,})"
        if req.prompt_tokens or req.max_output_tokens
        else ""
    )
    in_flight = f", {_usd(held)} of it held by requests in flight" if held else ""
    return (
        f"You exceeded your current quota: this request needs a hold of {_usd(needed)}{tokens}, but the "
        f"organization has {_usd(available)} available (balance {_usd(balance)}{in_flight}). Add credits, or "
        "lower the hold: set a smaller max_tokens (without it, the hold is for the whole context left after "
        "the prompt) or shorten the prompt."
    )


@dataclass(frozen=True)
class HoldRequest:
    request_id: str
    org_id: str
    key_id: str
    model_id: str
    endpoint: str
    gateway_id: str
    price_version: int | None
    free_tokens_wanted: int
    free_allowance: int
    month: str
    amount_for: Callable[[int], int]
    """Money to hold given how many free tokens were granted."""
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    """The estimate the hold is for (said in a refusal)."""


@dataclass(frozen=True)
class HoldRecord:
    request_id: str
    org_id: str
    key_id: str
    model_id: str
    endpoint: str
    amount: int
    free_tokens: int
    month: str | None
    price_version: int | None
    created_at: datetime
    progress_prompt_tokens: int = 0
    progress_completion_tokens: int = 0
    progress_cached_tokens: int = 0
    """The last progress recorded while the request ran (0 if none): what crash recovery bills."""


@dataclass(frozen=True)
class ProgressRecord:
    """Tokens an open request has generated so far, by the engine's own running count."""

    request_id: str
    org_id: str
    """The hold's organization: batches run in organization order (see `MoneyWriter._lock_order`)."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Of `prompt_tokens`, those the engine served from its prompt cache (priced as cached input)."""


@dataclass(frozen=True)
class SettleRecord:
    replica: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    free_tokens: int
    status: str
    latency_ms: int
    ttft_ms: int | None
    input_cost: int
    cached_input_cost: int
    output_cost: int
    internal: bool = False
    """The platform operator's own use: charged at list price and covered by an `internal` ledger entry of
    the same amount in the same transaction, so the balance does not move (see BillingService)."""

    @property
    def cost(self) -> int:
        return self.input_cost + self.cached_input_cost + self.output_cost


class _Cursor(Protocol):
    rowcount: int

    def execute(self, sql: str, params: dict[str, Any]) -> object: ...

    def fetchone(self) -> Any: ...


class _Statements:
    """The SQL above in the driver's bind style, and timestamps as the ORM stores them."""

    def __init__(self, db: Database) -> None:
        dialect = db.engine.dialect
        if dialect.name == "sqlite":  # the sqlite3 module takes `:name` binds whatever its default style
            self.sql = dict(_SQL)
        elif dialect.paramstyle == "pyformat":
            self.sql = {k: re.sub(r":(\w+)", r"%(\1)s", v) for k, v in _SQL.items()}
        else:
            raise NotImplementedError(f"no money writer for the {dialect.name} driver ({dialect.paramstyle} binds)")
        self._ts = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)

    def now(self) -> tuple[datetime, Any]:
        now = datetime.now(UTC)
        return now, now if self._ts is None else self._ts(now)

    def run(self, cur: _Cursor, name: str, params: dict[str, Any]) -> int:
        cur.execute(self.sql[name], params)
        return cur.rowcount


def _reserve(s: _Statements, cur: _Cursor, req: HoldRequest) -> HoldRecord | QuotaExceeded:
    now, ts = s.now()
    free = _hold_free(s, cur, req) if req.free_tokens_wanted > 0 and req.free_allowance > 0 else 0
    amount = req.amount_for(free)
    if amount > 0:
        s.run(cur, "ensure_balance", {"org": req.org_id})
        if s.run(cur, "hold", {"amount": amount, "org": req.org_id}) != 1:
            if free:  # give the free tokens back in this same transaction
                where = {"org": req.org_id, "model_id": req.model_id, "month": req.month}
                s.run(cur, "free_release", {"grant": free, **where})
            s.run(cur, "balance_read", {"org": req.org_id})
            balance, held = cur.fetchone()
            return QuotaExceeded(quota_message(req, amount, int(balance), int(held)))
    month = req.month if free else None
    s.run(
        cur,
        "reserve",
        {
            "request_id": req.request_id,
            "org": req.org_id,
            "key_id": req.key_id,
            "model_id": req.model_id,
            "endpoint": req.endpoint,
            "amount": amount,
            "free_tokens": free,
            "free_month": month,
            "price_version": req.price_version,
            "gateway_id": req.gateway_id,
            "now": ts,
        },
    )
    return HoldRecord(
        req.request_id, req.org_id, req.key_id, req.model_id, req.endpoint, amount, free, month, req.price_version, now
    )


def _hold_free(s: _Statements, cur: _Cursor, req: HoldRequest) -> int:
    where = {"org": req.org_id, "model_id": req.model_id, "month": req.month}
    s.run(cur, "free_row", where)
    s.run(cur, "free_read", where)
    used, held = cur.fetchone()
    grant = max(0, min(req.free_tokens_wanted, req.free_allowance - int(used) - int(held)))
    if grant == 0:
        return 0
    ok = s.run(cur, "free_hold", {**where, "grant": grant, "allowance": req.free_allowance})
    return grant if ok == 1 else 0


def _settle(s: _Statements, cur: _Cursor, hold: HoldRecord, rec: SettleRecord) -> bool:
    now, ts = s.now()
    cost = rec.cost
    if s.run(cur, "flip", {"now": ts, "request_id": hold.request_id}) != 1:
        return False  # settled already (a retry, or recovery racing the request)
    org, model = hold.org_id, hold.model_id
    if hold.free_tokens:
        s.run(
            cur,
            "free_settle",
            {"held": hold.free_tokens, "used": rec.free_tokens, "org": org, "model_id": model, "month": hold.month},
        )
    # Internal use moves no balance: its charge and the entry covering it sum to zero in the ledger.
    debit = 0 if rec.internal else cost
    if hold.amount or debit:
        s.run(cur, "charge_balance", {"cost": debit, "amount": hold.amount, "org": org})
    if cost:
        entry = {"org": org, "request_id": hold.request_id, "model_id": model, "now": ts}
        s.run(cur, "charge", {**entry, "amount": -cost})
        if rec.internal:
            s.run(cur, "cover", {**entry, "amount": cost})
    s.run(
        cur,
        "usage",
        {
            "request_id": hold.request_id,
            "org": org,
            "key_id": hold.key_id,
            "model_id": model,
            "endpoint": hold.endpoint,
            "replica": rec.replica[:240],
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "cached_tokens": rec.cached_tokens,
            "free_tokens": rec.free_tokens,
            "status": rec.status,
            "latency_ms": rec.latency_ms,
            "ttft_ms": rec.ttft_ms,
            "price_version": hold.price_version,
            "cost": cost,
            "now": ts,
        },
    )
    sums = {
        "requests": 1,
        "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens,
        "cached_tokens": rec.cached_tokens,
        "free_tokens": rec.free_tokens,
        "input_cost": rec.input_cost,
        "cached_input_cost": rec.cached_input_cost,
        "output_cost": rec.output_cost,
        "cost": cost,
    }
    s.run(cur, "rollup", {"org": org, "model_id": model, "day": now.strftime("%Y-%m-%d"), **sums})
    return True


def _progress(s: _Statements, cur: _Cursor, rec: ProgressRecord) -> bool:
    params = {
        "prompt_tokens": rec.prompt_tokens,
        "cached_tokens": min(rec.cached_tokens, rec.prompt_tokens),
        "completion_tokens": rec.completion_tokens,
    }
    return s.run(cur, "progress", {"request_id": rec.request_id, **params}) == 1


_Op = tuple[HoldRequest, None] | tuple[HoldRecord, SettleRecord] | tuple[ProgressRecord, None]
_Item = tuple[_Op, "Future[Any]"]


class MoneyWriter:
    """One connection, group commits. `reserve`/`settle`/`progress` return futures that complete once
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
        self._statements = _Statements(db)
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

    def progress(self, rec: ProgressRecord) -> Future[bool]:
        """Record an open request's tokens so far on its hold. The future's result is False if the hold
        was settled already (the record is then dropped: the settlement has the final counts)."""
        self.progress_writes += 1
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
                    results[i] = _settle(s, cur, first, second)
                elif isinstance(first, HoldRequest):
                    results[i] = _reserve(s, cur, first)
                else:
                    assert isinstance(first, ProgressRecord)
                    results[i] = _progress(s, cur, first)
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
