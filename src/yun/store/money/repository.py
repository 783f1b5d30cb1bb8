"""Prices, credits, reservations and usage: the money tables, each change in one transaction.

The request path's own writes (holds, progress, settlements) are in `sql.py`, group-committed by
`writer.py`; everything else (admin postings, prices, reports, what recovery reads) is here.

Invariants kept here and there (ARCHITECTURE.md, "Money invariants"):
- `balances.balance` always equals the sum of the org's ledger entries: both change in one transaction.
- `balance - held` never goes below zero: a hold is taken with a guarded UPDATE (`... WHERE balance - held
  >= :amount`), which is atomic on SQLite (one writer) and on PostgreSQL (row lock, re-checked after wait).
- A reservation is settled once: the settle transaction starts by flipping `settled_at` from NULL, and
  only the transaction that flipped it writes the usage record and the charge.
Row locks are always taken in the same order (free_usage, then balances) so PostgreSQL cannot deadlock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from yun.errors import InvalidRequest, NotFound
from yun.store.db import Database
from yun.store.money.records import (
    BACKGROUND_ENDPOINTS,
    COMPUTE_ENDPOINT,
    INT64_MAX,
    MAX_FREE_TOKENS,
    MAX_PRICE_PER_MTOK,
    POSTING_KINDS,
    ROLLUP_SUMS,
    TRAINING_ENDPOINT,
    HoldRecord,
    PeriodFigures,
    PriceRecord,
    compute_holder,
    training_holder,
)
from yun.store.orm import (
    BalanceRow,
    Base,
    FreeAllowanceRow,
    FreeUsageRow,
    GatewayInstanceRow,
    LedgerRow,
    OrganizationRow,
    PriceRow,
    ReservationRow,
    RollupRow,
    UsageRow,
)
from yun.store.versions import add_version

__all__ = ["MoneyRepository"]


def _t(row: type[Base]) -> Table:
    return cast(Table, row.__table__)


_B, _L, _P, _R, _U, _RU = (_t(BalanceRow), _t(LedgerRow), _t(PriceRow), _t(ReservationRow), _t(UsageRow), _t(RollupRow))
_FA, _FU = _t(FreeAllowanceRow), _t(FreeUsageRow)
_O = _t(OrganizationRow)
_G = _t(GatewayInstanceRow)


def _now() -> datetime:
    return datetime.now(UTC)


def _upsert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class MoneyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- prices --------------------------------------------------------------------------------
    def add_price(
        self, model_id: str, input_per_mtok: int, output_per_mtok: int, cached: int, training: int | None = None
    ) -> PriceRecord:
        """Append a new price version; earlier versions (and the charges that used them) are untouched.
        `training`: per 1M trained tokens (None: the model is not fine-tuned for money)."""
        given = (
            ("input", input_per_mtok),
            ("output", output_per_mtok),
            ("cached_input", cached),
            ("training", training),
        )
        for param, value in given:
            if value is not None and not 0 <= value <= MAX_PRICE_PER_MTOK:
                raise InvalidRequest(f"{param} must be between 0 and $1,000,000 per 1M tokens", param=param)
        values = {
            "input_per_mtok": input_per_mtok,
            "output_per_mtok": output_per_mtok,
            "cached_input_per_mtok": cached,
            "training_per_mtok": training,
        }
        version, created_at = add_version(self._db, _P, "model_id", model_id, values)
        return PriceRecord(model_id, version, input_per_mtok, output_per_mtok, cached, created_at, training)

    def prices(self) -> dict[str, PriceRecord]:
        """The current (newest) price of every model."""
        with self._db.reader.connect() as c:
            newest = select(_P.c.model_id, func.max(_P.c.version).label("v")).group_by(_P.c.model_id).subquery()
            rows = c.execute(
                select(_P).join(newest, and_(_P.c.model_id == newest.c.model_id, _P.c.version == newest.c.v))
            )
            return {r.model_id: _price(r) for r in rows}

    def price_history(self, model_id: str) -> list[PriceRecord]:
        with self._db.reader.connect() as c:
            rows = c.execute(select(_P).where(_P.c.model_id == model_id).order_by(_P.c.version))
            return [_price(r) for r in rows]

    def price(self, model_id: str, version: int) -> PriceRecord | None:
        with self._db.reader.connect() as c:
            r = c.execute(select(_P).where(_P.c.model_id == model_id, _P.c.version == version)).first()
            return None if r is None else _price(r)

    # -- free tier -----------------------------------------------------------------------------
    def set_free_allowance(self, org_id: str, model_id: str, monthly_tokens: int) -> None:
        if not 0 <= monthly_tokens <= MAX_FREE_TOKENS:
            raise InvalidRequest(f"monthly_tokens must be between 0 and {MAX_FREE_TOKENS}", param="monthly_tokens")
        with self._db.engine.begin() as c:
            stmt = _upsert(c)(_FA).values(org_id=org_id, model_id=model_id, monthly_tokens=monthly_tokens)
            c.execute(
                stmt.on_conflict_do_update(
                    index_elements=["org_id", "model_id"], set_={"monthly_tokens": monthly_tokens}
                )
            )

    def free_allowances(self) -> dict[tuple[str, str], int]:
        with self._db.reader.connect() as c:
            return {(r.org_id, r.model_id): r.monthly_tokens for r in c.execute(select(_FA))}

    def free_used(self, org_id: str, model_id: str, month: str) -> tuple[int, int]:
        with self._db.reader.connect() as c:
            r = c.execute(
                select(_FU.c.used, _FU.c.held).where(
                    _FU.c.org_id == org_id, _FU.c.model_id == model_id, _FU.c.month == month
                )
            ).first()
            return (0, 0) if r is None else (int(r.used), int(r.held))

    # -- ledger --------------------------------------------------------------------------------
    def credit(self, org_id: str, kind: str, amount: int, reference: str, note: str | None = None) -> bool:
        """Append a ledger entry and move the balance with it. Returns False if `reference` was already
        posted for this kind (idempotent retries). A debit may not take the balance below what is held,
        and a credit may not take it past INT64_MAX: either is refused, and nothing is written."""
        if kind not in POSTING_KINDS:
            # Charges are written only by a settlement (sql.settle), next to their usage record, so
            # statements reconcile.
            raise InvalidRequest(f"kind must be one of {', '.join(POSTING_KINDS)}", param="kind")
        if not -INT64_MAX <= amount <= INT64_MAX:
            raise InvalidRequest("amount is larger than any balance can hold", param="amount")
        try:
            with self._db.engine.begin() as c:
                if c.execute(select(_O.c.id).where(_O.c.id == org_id)).first() is None:
                    raise NotFound(f"no organization {org_id!r}")
                self._ensure_balance(c, org_id)
                # The guard is part of the UPDATE (atomic on both backends), and its arithmetic stays in
                # range: `INT64_MAX - amount` is computed here, never `balance + amount` in SQL first.
                if amount < 0:
                    guard, refusal = _B.c.balance - _B.c.held + amount >= 0, "below zero"
                else:
                    guard, refusal = _B.c.balance <= INT64_MAX - amount, "past the largest amount it can hold"
                moved = c.execute(
                    update(_B).where(_B.c.org_id == org_id, guard).values(balance=_B.c.balance + amount)
                ).rowcount
                if moved != 1:
                    raise InvalidRequest(f"that posting would take the balance {refusal}", param="amount")
                c.execute(
                    insert(_L).values(
                        org_id=org_id, kind=kind, amount=amount, reference=reference, note=note, created_at=_now()
                    )
                )
        except IntegrityError:
            return False
        return True

    def _ensure_balance(self, c: Connection, org_id: str) -> None:
        c.execute(_upsert(c)(_B).values(org_id=org_id, balance=0, held=0).on_conflict_do_nothing())

    def balance(self, org_id: str) -> tuple[int, int]:
        """(balance, held) in nanodollars."""
        with self._db.reader.connect() as c:
            r = c.execute(select(_B.c.balance, _B.c.held).where(_B.c.org_id == org_id)).first()
            return (0, 0) if r is None else (int(r.balance), int(r.held))

    def ledger_sum(self, org_id: str) -> int:
        with self._db.reader.connect() as c:
            return int(
                c.execute(select(func.coalesce(func.sum(_L.c.amount), 0)).where(_L.c.org_id == org_id)).scalar() or 0
            )

    def ledger(self, org_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        with self._db.reader.connect() as c:
            rows = c.execute(
                select(_L)
                .where(_L.c.org_id == org_id, _L.c.created_at >= start, _L.c.created_at < end)
                .order_by(_L.c.id)
            )
            return [dict(r._mapping) for r in rows]

    # -- open holds (written by the group-committing writer; read here for recovery) --------------
    def open_holds(
        self, gateway_id: str | None = None, older_than: datetime | None = None, endpoint: str | None = None
    ) -> list[HoldRecord]:
        """Unsettled holds, oldest first, with the progress last recorded on each (what recovery bills)."""
        q = select(_R).where(_R.c.settled_at.is_(None))
        if gateway_id is not None:
            q = q.where(_R.c.gateway_id == gateway_id)
        if older_than is not None:
            q = q.where(_R.c.created_at < older_than)
        if endpoint is not None:
            q = q.where(_R.c.endpoint == endpoint)
        return self._holds(q.order_by(_R.c.created_at, _R.c.request_id))

    def compute_holds(self) -> dict[str, list[HoldRecord]]:
        """Open compute holds by the deployment they are for (see `compute_holder`), oldest first."""
        return self._holds_by_owner(COMPUTE_ENDPOINT, compute_holder(""))

    def training_holds(self) -> dict[str, list[HoldRecord]]:
        """Open fine-tuning holds by the job they are for (see `training_holder`)."""
        return self._holds_by_owner(TRAINING_ENDPOINT, training_holder(""))

    def _holds_by_owner(self, endpoint: str, prefix: str) -> dict[str, list[HoldRecord]]:
        q = (
            select(_R)
            .where(_R.c.settled_at.is_(None), _R.c.endpoint == endpoint)
            .order_by(_R.c.created_at, _R.c.request_id)
        )
        found: dict[str, list[HoldRecord]] = {}
        with self._db.reader.connect() as c:
            for r in c.execute(q):
                found.setdefault(r.gateway_id.removeprefix(prefix), []).append(_hold(r))
        return found

    def dead_holds(
        self, now: datetime, orphaned_before: datetime, *, exclusive_of: str | None = None
    ) -> list[HoldRecord]:
        """Unsettled holds whose owner is dead: its lease (`gateway_instances`) expired before `now`, or it
        has no lease row and the hold was taken before `orphaned_before`. With `exclusive_of`, the caller
        (that instance) holds the database alone, so every other owner is dead, whatever its lease says."""
        # Compute holds are the compute biller's to settle, against metered intervals (billing/compute.py);
        # a fine-tuning job's, its runner's (yun.jobs.fine_tuning).
        q = select(_R).where(_R.c.settled_at.is_(None), _R.c.endpoint.not_in(BACKGROUND_ENDPOINTS))
        if exclusive_of is not None:
            return self._holds(q.where(_R.c.gateway_id != exclusive_of))
        expired = select(_G.c.id).where(_G.c.expires_at < now)
        orphaned = and_(_R.c.gateway_id.not_in(select(_G.c.id)), _R.c.created_at < orphaned_before)
        return self._holds(q.where(or_(_R.c.gateway_id.in_(expired), orphaned)))

    def _holds(self, query: Any) -> list[HoldRecord]:
        with self._db.reader.connect() as c:
            return [_hold(r) for r in c.execute(query)]

    # -- reading usage -------------------------------------------------------------------------
    def rollups(self, org_id: str, first_day: str, last_day: str) -> list[dict[str, Any]]:
        """Per model and day, inclusive range of YYYY-MM-DD days."""
        with self._db.reader.connect() as c:
            rows = c.execute(
                select(_RU)
                .where(_RU.c.org_id == org_id, _RU.c.day >= first_day, _RU.c.day <= last_day)
                .order_by(_RU.c.day, _RU.c.model_id)
            )
            return [dict(r._mapping) for r in rows]

    def usage_records(self, org_id: str, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        """Newest first, ordered by (created_at, request_id) so that records settled in the same instant
        have an order too; `after` is the request id of the previous page's last record (keyset paging:
        no record is skipped or repeated, however many share a timestamp). Raises NotFound if `after`
        is not one of this org's records."""
        with self._db.reader.connect() as c:
            q = select(_U).where(_U.c.org_id == org_id)
            if after is not None:
                mark = c.execute(
                    select(_U.c.created_at).where(_U.c.org_id == org_id, _U.c.request_id == after)
                ).scalar()
                if mark is None:
                    raise NotFound(f"no usage record {after!r} to page after")
                q = q.where(tuple_(_U.c.created_at, _U.c.request_id) < tuple_(mark, after))
            rows = c.execute(q.order_by(_U.c.created_at.desc(), _U.c.request_id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def usage_totals(self, org_id: str) -> dict[str, int]:
        """Sum over every usage record (for reconciliation and tests, not the request path)."""
        with self._db.reader.connect() as c:
            r = c.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(_U.c.cost), 0),
                    func.coalesce(func.sum(_U.c.completion_tokens), 0),
                ).where(_U.c.org_id == org_id)
            ).one()
            return {"records": int(r[0]), "cost": int(r[1]), "completion_tokens": int(r[2])}

    # -- reading usage and the ledger for reports (grouped in SQL, never row by row) ---------------
    def rollup_sums(self, org_id: str, first_day: str, last_day: str, group_by: str) -> list[dict[str, Any]]:
        """Rollup totals for the days first_day..last_day, both included (YYYY-MM-DD, UTC), grouped in SQL
        by `group_by` ("model_id" or "day") and ordered by it. Reads at most one rollup row per model and day."""
        with self._db.reader.connect() as c:
            return _rollup_sums(c, org_id, first_day, last_day, group_by)

    def revenue_by_day(
        self, first_day: str, last_day: str, group_by: str, *, excluding: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """Every organization's charges (tokens, training and dedicated compute) per UTC day and model or
        org, from the rollups, for the days first_day..last_day (both included); `excluding` leaves orgs out
        (the operator's own, whose charges the ledger covers). Rows: day, the key, `cost` (all of it),
        `compute_cost` (its compute part), `compute_seconds`, `training_cost` (its training part)."""
        if group_by not in ("model_id", "org_id"):
            raise ValueError(f"cannot group revenue by {group_by!r}")
        key = getattr(_RU.c, group_by)
        q = (
            select(
                _RU.c.day,
                key,
                func.sum(_RU.c.cost).label("cost"),
                func.sum(_RU.c.compute_cost).label("compute_cost"),
                func.sum(_RU.c.compute_seconds).label("compute_seconds"),
                func.sum(_RU.c.training_cost).label("training_cost"),
            )
            .where(_RU.c.day >= first_day, _RU.c.day <= last_day, _RU.c.org_id.not_in(sorted(excluding)))
            .group_by(_RU.c.day, key)
            .order_by(_RU.c.day, key)
        )
        with self._db.reader.connect() as c:
            return [
                {
                    "day": r["day"],
                    group_by: r[group_by],
                    **{k: int(r[k]) for k in ("cost", "compute_cost", "compute_seconds", "training_cost")},
                }
                for r in c.execute(q).mappings()
            ]

    def period_figures(self, org_id: str, start: datetime, end: datetime) -> PeriodFigures:
        """Usage by model and ledger sums by kind for [start, end) (UTC midnights), read in one snapshot:
        a request settling meanwhile is in both the usage and the ledger figures, or in neither."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if any((t.hour, t.minute, t.second, t.microsecond) != (0, 0, 0, 0) for t in (start, end)):
            # Rollups are per UTC day: any other bound could not be matched against the ledger.
            raise ValueError("period bounds must be UTC midnights")
        with self._db.reader.connect() as c:
            if c.dialect.name == "postgresql":
                # One snapshot for the three reads (READ COMMITTED would take one per statement). SQLite
                # transactions are serializable already. The pool resets the level on release.
                c.execution_options(isolation_level="REPEATABLE READ")
            last_day = (end - timedelta(days=1)).date().isoformat()  # `end` is the next period's first midnight
            usage = _rollup_sums(c, org_id, start.date().isoformat(), last_day, "model_id")
            # Two range reads on (org_id, created_at) rather than one GROUP BY over the org's history: with
            # an index on (org_id, created_at, kind, amount) each reads only its own index entries. Without
            # it (separate org_id and created_at indexes today) both visit every ledger row of the org.
            ledger = _L.c.org_id == org_id
            opening = c.execute(
                select(func.coalesce(func.sum(_L.c.amount), 0)).where(ledger, _L.c.created_at < start)
            ).scalar()
            rows = c.execute(
                select(_L.c.kind, func.sum(_L.c.amount))
                .where(ledger, _L.c.created_at >= start, _L.c.created_at < end)
                .group_by(_L.c.kind)
            )
            during = {kind: int(amount) for kind, amount in rows}
        return PeriodFigures(usage=usage, opening_balance=int(opening or 0), ledger_during=during)


def _hold(r: Any) -> HoldRecord:
    return HoldRecord(
        r.request_id,
        r.org_id,
        r.key_id,
        r.model_id,
        r.endpoint,
        int(r.amount),
        int(r.free_tokens),
        r.free_month,
        r.price_version,
        r.created_at,
        int(r.progress_prompt_tokens),
        int(r.progress_completion_tokens),
        int(r.progress_cached_tokens),
    )


def _rollup_sums(c: Connection, org_id: str, first_day: str, last_day: str, group_by: str) -> list[dict[str, Any]]:
    if group_by not in ("model_id", "day"):
        raise ValueError(f"cannot group rollups by {group_by!r}")
    key = getattr(_RU.c, group_by)
    # The primary key (org_id, model_id, day) bounds this to the org's rows; SUM is exact on integers
    # (PostgreSQL returns NUMERIC for SUM(BIGINT), hence the int()).
    rows = c.execute(
        select(key, *(func.sum(getattr(_RU.c, k)).label(k) for k in ROLLUP_SUMS))
        .where(_RU.c.org_id == org_id, _RU.c.day >= first_day, _RU.c.day <= last_day)
        .group_by(key)
        .order_by(key)
    )
    return [{group_by: r[0], **{k: int(v) for k, v in zip(ROLLUP_SUMS, r[1:], strict=True)}} for r in rows]


def _price(r: Any) -> PriceRecord:
    return PriceRecord(
        r.model_id,
        r.version,
        r.input_per_mtok,
        r.output_per_mtok,
        r.cached_input_per_mtok,
        r.created_at,
        r.training_per_mtok,
    )
