"""The request path's writes as plain SQL: a hold, a settlement, a progress record, each a few statements.

Plain SQL, the same on SQLite and PostgreSQL (both speak INSERT ... ON CONFLICT), run on a DB-API cursor by
the group-committing writer (`writer.py`), inside whatever transaction it has open. Invariants
(ARCHITECTURE.md, "Money invariants"), statement by statement:
- a hold is a guarded `UPDATE ... WHERE balance - held >= :amount` (atomic on SQLite and PostgreSQL);
  a refused hold undoes its free-token hold in the same transaction, so other operations of the
  batch are unaffected;
- a settlement starts by flipping `settled_at` from NULL: only the transaction that flipped it writes
  the usage record, the charge and the rollup;
- a compute settlement (a dedicated deployment's replica-seconds) marks the intervals it charges in the
  same transaction, all of the ones it names or it is rolled back; a cost past its hold is charged with
  a guarded `UPDATE ... WHERE balance - held + :amount >= :cost`, so `balance - held` stays >= 0;
- a progress record touches only the open hold's own counts (`... AND settled_at IS NULL`): it moves
  no money, and one that lands after the settlement changes nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import DateTime, Engine

from yun.errors import DatabaseUnavailable, QuotaExceeded
from yun.store.money.records import (
    BACKGROUND_ENDPOINTS,
    ROLLUP_SUMS,
    HoldRecord,
    HoldRequest,
    ProgressRecord,
    ResponseWrite,
    SettleRecord,
    StaleComputeBill,
    quota_message,
)

__all__ = ["Cursor", "Statements", "record_progress", "reserve", "settle", "store_response"]

# `:name` binds are rewritten once to the driver's style. Built from constants only, never from input.
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
    "charge_balance_over_hold": (
        "UPDATE balances SET balance = balance - :cost, held = held - :amount"
        " WHERE org_id = :org AND balance - held + :amount >= :cost"
    ),
    "bill_intervals": (
        "UPDATE compute_usage SET charge_ref = :request_id WHERE deployment_id = :deployment_id"
        " AND charge_ref IS NULL AND owner_org IS NOT NULL AND id >= :first_id AND id <= :last_id"
    ),
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
        " compute_seconds, training_tokens, created_at) VALUES (:request_id, :org, :key_id, :model_id, :endpoint,"
        " :replica, :prompt_tokens, :completion_tokens, :cached_tokens, :free_tokens, :status, :latency_ms, :ttft_ms,"
        " :price_version, :cost, :compute_seconds, :training_tokens, :now)"
    ),
    "response": (
        "INSERT INTO responses (id, org_id, previous_response_id, model_id, input_items, response, created_at)"
        " VALUES (:id, :org, :previous_response_id, :model_id, :input_items, :response, :created_at)"
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


class Cursor(Protocol):
    rowcount: int

    def execute(self, sql: str, params: dict[str, Any]) -> object: ...

    def fetchone(self) -> Any: ...


class Statements:
    """The SQL above in the driver's bind style, and timestamps as the ORM stores them."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        if dialect.name == "sqlite":  # the sqlite3 module takes `:name` binds whatever its default style
            self.sql = dict(_SQL)
        elif dialect.paramstyle == "pyformat":
            self.sql = {k: re.sub(r":(\w+)", r"%(\1)s", v) for k, v in _SQL.items()}
        else:
            # Unreachable through Settings, which accepts only SQLite and PostgreSQL (psycopg 3) URLs.
            raise DatabaseUnavailable(
                f"the money writer supports SQLite and PostgreSQL (psycopg 3), not {dialect.name}"
            )
        self._ts = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)

    def now(self) -> tuple[datetime, Any]:
        now = datetime.now(UTC)
        return now, self.timestamp(now)

    def timestamp(self, when: datetime) -> Any:
        """`when` as the ORM binds a timezone-aware DateTime on this dialect."""
        return when if self._ts is None else self._ts(when)

    def run(self, cur: Cursor, name: str, params: dict[str, Any]) -> int:
        cur.execute(self.sql[name], params)
        return cur.rowcount


def reserve(s: Statements, cur: Cursor, req: HoldRequest) -> HoldRecord | QuotaExceeded:
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


def _hold_free(s: Statements, cur: Cursor, req: HoldRequest) -> int:
    where = {"org": req.org_id, "model_id": req.model_id, "month": req.month}
    s.run(cur, "free_row", where)
    s.run(cur, "free_read", where)
    used, held = cur.fetchone()
    grant = max(0, min(req.free_tokens_wanted, req.free_allowance - int(used) - int(held)))
    if grant == 0:
        return 0
    ok = s.run(cur, "free_hold", {**where, "grant": grant, "allowance": req.free_allowance})
    return grant if ok == 1 else 0


def settle(s: Statements, cur: Cursor, hold: HoldRecord, rec: SettleRecord) -> bool:
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
    bill = rec.compute
    if bill is not None:
        marked = s.run(
            cur,
            "bill_intervals",
            {
                "request_id": hold.request_id,
                "deployment_id": bill.deployment_id,
                "first_id": bill.first_id,
                "last_id": bill.last_id,
            },
        )
        if marked != bill.intervals:
            raise StaleComputeBill(f"{hold.request_id}: {bill.intervals} interval(s) to bill, {marked} left unbilled")
    # Internal use moves no balance: its charge and the entry covering it sum to zero in the ledger.
    debit = 0 if rec.internal else cost
    if debit > hold.amount:
        # Only compute passes its hold (see SettleRecord.compute): the rest comes from what is available.
        if s.run(cur, "charge_balance_over_hold", {"cost": debit, "amount": hold.amount, "org": org}) != 1:
            s.run(cur, "balance_read", {"org": org})
            balance, held = cur.fetchone()
            raise QuotaExceeded(
                f"{hold.request_id} costs {debit} nanodollars, its hold {hold.amount}: more than the "
                f"{int(balance) - int(held)} available"
            )
    elif hold.amount or debit:
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
            "compute_seconds": 0 if bill is None else bill.seconds,
            "training_tokens": rec.training_tokens,
            "now": ts,
        },
    )
    sums = {
        # A request is an inference request: a deployment's compute and a job's training are not.
        "requests": 0 if hold.endpoint in BACKGROUND_ENDPOINTS else 1,
        "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens,
        "cached_tokens": rec.cached_tokens,
        "free_tokens": rec.free_tokens,
        "input_cost": rec.input_cost,
        "cached_input_cost": rec.cached_input_cost,
        "output_cost": rec.output_cost,
        "cost": cost,
        "compute_seconds": 0 if bill is None else bill.seconds,
        "compute_cost": 0 if bill is None else bill.cost,
        "training_tokens": rec.training_tokens,
        "training_cost": rec.training_cost,
    }
    s.run(cur, "rollup", {"org": org, "model_id": model, "day": now.strftime("%Y-%m-%d"), **sums})
    return True


def record_progress(s: Statements, cur: Cursor, rec: ProgressRecord) -> bool:
    params = {
        "prompt_tokens": rec.prompt_tokens,
        "cached_tokens": min(rec.cached_tokens, rec.prompt_tokens),
        "completion_tokens": rec.completion_tokens,
    }
    return s.run(cur, "progress", {"request_id": rec.request_id, **params}) == 1


def store_response(s: Statements, cur: Cursor, rec: ResponseWrite) -> bool:
    params = {
        "id": rec.id,
        "org": rec.org_id,
        "previous_response_id": rec.previous_response_id,
        "model_id": rec.model_id,
        "input_items": rec.input_items,
        "response": rec.response,
        "created_at": s.timestamp(rec.created_at),
    }
    return s.run(cur, "response", params) == 1
