"""Compute usage and compute prices: the closed intervals of replica-seconds the compute meter writes (read
for billing and reports), the compute each run of a fine-tuning job held (`training_compute`, for unit
economics), and the versioned prices per resource shape they are priced at.

The replica registry (`replicas`) is the controller's; here it is only read, to find what is left to
meter: every replica that holds compute now, and every stopped one whose last interval is not written
yet. Interval rows are immutable once written (unique on replica and start), so a meter that runs twice,
or two that race, write each second of a replica's life once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, exists, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from yun.errors import InvalidRequest
from yun.store.db import Database
from yun.store.money import compute_holder
from yun.store.orm import (
    ComputePriceRow,
    ComputeUsageRow,
    DeploymentRow,
    ReplicaRow,
    ReservationRow,
    TrainingComputeRow,
)
from yun.store.replicas import LIVE_STATES
from yun.store.repos import _utc
from yun.store.versions import add_version

__all__ = [
    "MAX_PRICE_PER_HOUR",
    "ComputeInterval",
    "ComputePriceRecord",
    "ComputeRepository",
    "MeterCandidate",
    "TrainingCompute",
]

MAX_PRICE_PER_HOUR = 10**14
"""Highest compute price per replica-hour, in nanodollars ($100,000): a day of a thousand replicas still
fits in a BIGINT."""

_P = cast(Table, ComputePriceRow.__table__)
_U = cast(Table, ComputeUsageRow.__table__)
_R = cast(Table, ReplicaRow.__table__)
_D = cast(Table, DeploymentRow.__table__)
_H = cast(Table, ReservationRow.__table__)
_T = cast(Table, TrainingComputeRow.__table__)


@dataclass(frozen=True)
class ComputeInterval:
    """One closed interval of one replica's life, in whole UTC seconds within one UTC day."""

    replica_id: str
    deployment_id: str
    owner_org: str | None
    model_id: str
    shape: str
    node: str
    started_at: datetime
    ended_at: datetime
    final: bool
    """The replica's last interval (it ends at its `stopped_at`)."""
    price_version: int | None = None
    """The compute price version of its shape it was priced at; None: the shape had no price."""
    cost: int = 0
    """What it cost the operator, in nanodollars."""
    price: int = 0
    """What its owner pays for it, in nanodollars (0 for shared compute)."""
    id: int | None = None
    """Set once written."""
    charge_ref: str | None = None
    """The compute hold whose settlement charged it; None: not (yet) billed."""

    @property
    def seconds(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())

    @property
    def day(self) -> str:
        return self.started_at.date().isoformat()


@dataclass(frozen=True)
class TrainingCompute:
    """The compute one run of a fine-tuning job held on one UTC day, in whole UTC seconds."""

    job_id: str
    run: int
    """The job's attempt number: 1, then 2 once resumed, ..."""
    org_id: str
    model_id: str
    """The base model the job fine-tunes."""
    shape: str
    cpus: float
    gpus: float
    started_at: datetime
    ended_at: datetime
    price_version: int | None = None
    cost: int = 0
    """What it cost the operator, in nanodollars (its shape's cost price when recorded)."""

    @property
    def seconds(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())

    @property
    def day(self) -> str:
        return self.started_at.date().isoformat()


@dataclass(frozen=True)
class ComputePriceRecord:
    """One version of a shape's compute prices, in nanodollars per replica-hour."""

    shape: str
    version: int
    cost_per_hour: int
    """What a replica of the shape costs the operator."""
    price_per_hour: int
    """What an organization pays for a replica of its dedicated deployment."""
    created_at: datetime


@dataclass(frozen=True)
class MeterCandidate:
    """A replica with compute left to meter, as the registry has it, and what its deployment is now."""

    replica_id: str
    deployment_id: str
    shape: str
    node: str
    state: str
    created_at: datetime
    stopped_at: datetime | None
    """When it stopped holding compute (`failed` and `stopped`); None while it holds it."""
    metered_until: datetime | None
    """The end of its last written interval; None: nothing metered yet."""
    deployment: tuple[str | None, str] | None
    """(owner org, model id) of its deployment, or None when the deployment row is gone."""


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _interval(row: Any) -> ComputeInterval:
    return ComputeInterval(
        replica_id=row.replica_id,
        deployment_id=row.deployment_id,
        owner_org=row.owner_org,
        model_id=row.model_id,
        shape=row.shape,
        node=row.node,
        started_at=cast(datetime, _utc(row.started_at)),
        ended_at=cast(datetime, _utc(row.ended_at)),
        final=bool(row.final),
        price_version=row.price_version,
        cost=int(row.cost),
        price=int(row.price),
        id=int(row.id),
        charge_ref=row.charge_ref,
    )


def _price(row: Any) -> ComputePriceRecord:
    return ComputePriceRecord(
        row.shape, row.version, int(row.cost_per_hour), int(row.price_per_hour), cast(datetime, _utc(row.created_at))
    )


class ComputeRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- metering -------------------------------------------------------------------------------
    def candidates(self) -> list[MeterCandidate]:
        """Every replica with compute left to meter: those in a state that holds compute, and those that
        stopped (or failed) without their last interval written. Oldest first."""
        last_end = (
            select(_U.c.ended_at)
            .where(_U.c.replica_id == _R.c.id)
            .order_by(_U.c.started_at.desc())
            .limit(1)
            .scalar_subquery()
        )
        finished = exists().where(_U.c.replica_id == _R.c.id, _U.c.final)
        q = (
            select(
                _R.c.id,
                _R.c.deployment_id,
                _R.c.shape,
                _R.c.node,
                _R.c.state,
                _R.c.created_at,
                _R.c.stopped_at,
                _R.c.updated_at,
                _D.c.id.label("known"),
                _D.c.owner_org,
                _D.c.model_id,
                last_end.label("metered_until"),
            )
            .select_from(_R.outerjoin(_D, _D.c.id == _R.c.deployment_id))
            .where(or_(_R.c.state.in_(LIVE_STATES), ~finished))
            .order_by(_R.c.created_at, _R.c.id)
        )
        with self._db.reader.connect() as c:
            rows = c.execute(q).all()
        return [
            MeterCandidate(
                replica_id=r.id,
                deployment_id=r.deployment_id,
                shape=r.shape,
                node=r.node,
                state=r.state,
                created_at=cast(datetime, _utc(r.created_at)),
                # A replica out of the live states always has a stop time; `updated_at` (when it left
                # them) stands in should one not.
                stopped_at=None if r.state in LIVE_STATES else _utc(r.stopped_at or r.updated_at),
                metered_until=_utc(r.metered_until),
                deployment=None if r.known is None else (r.owner_org, r.model_id),
            )
            for r in rows
        ]

    def last_attribution(self, deployment_id: str) -> tuple[str | None, str] | None:
        """(owner org, model id) a deployment whose row is gone (deleted once its replicas stopped) was
        metered for: that of its latest interval, else of its latest compute hold (a dedicated deployment
        holds from its first billing pass on, maybe before anything of it was metered)."""
        latest = (
            select(_U.c.owner_org, _U.c.model_id)
            .where(_U.c.deployment_id == deployment_id)
            .order_by(_U.c.id.desc())
            .limit(1)
        )
        held = (
            select(_H.c.org_id, _H.c.model_id)
            .where(_H.c.gateway_id == compute_holder(deployment_id))
            .order_by(_H.c.created_at.desc())
            .limit(1)
        )
        with self._db.reader.connect() as c:
            row = c.execute(latest).first() or c.execute(held).first()
        return None if row is None else (row[0], row[1])

    def record(self, intervals: list[ComputeInterval], now: datetime) -> list[ComputeInterval]:
        """Write intervals, in one transaction; those whose (replica, start) is written already are
        skipped (a meter that ran twice or raced another). Returns those written, with their ids."""
        written: list[ComputeInterval] = []
        with self._db.engine.begin() as c:
            for i in intervals:
                stmt = (
                    _insert(c)(_U)
                    .values(
                        replica_id=i.replica_id,
                        deployment_id=i.deployment_id,
                        owner_org=i.owner_org,
                        model_id=i.model_id,
                        shape=i.shape,
                        node=i.node,
                        started_at=i.started_at,
                        ended_at=i.ended_at,
                        day=i.day,
                        seconds=i.seconds,
                        final=i.final,
                        price_version=i.price_version,
                        cost=i.cost,
                        price=i.price,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["replica_id", "started_at"])
                    .returning(_U.c.id)
                )
                new_id = c.execute(stmt).scalar()
                if new_id is not None:
                    written.append(replace(i, id=int(new_id)))
        return written

    # -- billing ----------------------------------------------------------------------------------
    def unbilled(self) -> dict[str, list[ComputeInterval]]:
        """Dedicated compute not billed yet, by deployment, in the order it was metered."""
        q = select(_U).where(_U.c.charge_ref.is_(None), _U.c.owner_org.is_not(None)).order_by(_U.c.id)
        found: dict[str, list[ComputeInterval]] = {}
        with self._db.reader.connect() as c:
            for r in c.execute(q):
                found.setdefault(r.deployment_id, []).append(_interval(r))
        return found

    def live_replicas(self) -> dict[str, int]:
        """How many replicas of each deployment hold compute now (absent: none)."""
        q = select(_R.c.deployment_id, func.count()).where(_R.c.state.in_(LIVE_STATES)).group_by(_R.c.deployment_id)
        with self._db.reader.connect() as c:
            return {dep: int(n) for dep, n in c.execute(q)}

    def cost_by_day(self, first_day: str, last_day: str, group_by: str) -> list[dict[str, Any]]:
        """What compute cost the operator per UTC day and model or owner (None: shared), for the days
        first_day..last_day (both included), summed in SQL: rows of day, the key, `seconds`, `cost`."""
        if group_by not in ("model_id", "owner_org"):
            raise ValueError(f"cannot group compute by {group_by!r}")
        key = getattr(_U.c, group_by)
        q = (
            select(_U.c.day, key, func.sum(_U.c.seconds).label("seconds"), func.sum(_U.c.cost).label("cost"))
            .where(_U.c.day >= first_day, _U.c.day <= last_day)
            .group_by(_U.c.day, key)
        )
        with self._db.reader.connect() as c:
            return [
                {"day": r["day"], group_by: r[group_by], "seconds": int(r["seconds"]), "cost": int(r["cost"])}
                for r in c.execute(q).mappings()
            ]

    def owned_by_deployment(self, owner_org: str) -> dict[str, tuple[int, int]]:
        """An organization's metered dedicated compute, summed in SQL per deployment: (replica-seconds, what
        it pays for them in nanodollars). Only intervals metered while it owned the deployment count."""
        q = (
            select(_U.c.deployment_id, func.sum(_U.c.seconds), func.sum(_U.c.price))
            .where(_U.c.owner_org == owner_org)
            .group_by(_U.c.deployment_id)
        )
        with self._db.reader.connect() as c:
            return {dep: (int(seconds), int(price)) for dep, seconds, price in c.execute(q)}

    # -- training ---------------------------------------------------------------------------------
    def record_training(self, pieces: list[TrainingCompute], now: datetime) -> bool:
        """Write one run of a job (its pieces, one per UTC day, all of the same job and run) in one
        transaction, unless that run is recorded already: False then, and nothing is written. A run is
        counted once however often its end is recorded (a runner that crashed after recording it)."""
        if not pieces:
            return False
        job_id, run = pieces[0].job_id, pieces[0].run
        if any((p.job_id, p.run) != (job_id, run) for p in pieces):
            raise ValueError("the pieces of one run only")
        try:
            with self._db.engine.begin() as c:
                if c.execute(select(_T.c.id).where(_T.c.job_id == job_id, _T.c.run == run).limit(1)).first():
                    return False
                for p in pieces:
                    c.execute(
                        insert(_T).values(
                            job_id=p.job_id,
                            run=p.run,
                            org_id=p.org_id,
                            model_id=p.model_id,
                            shape=p.shape,
                            cpus=p.cpus,
                            gpus=p.gpus,
                            started_at=p.started_at,
                            ended_at=p.ended_at,
                            day=p.day,
                            seconds=p.seconds,
                            price_version=p.price_version,
                            cost=p.cost,
                            created_at=now,
                        )
                    )
        except IntegrityError:
            return False  # recorded meanwhile by another runner (unique on job, run and day)
        return True

    def training(self, job_id: str) -> list[TrainingCompute]:
        """Every recorded piece of a job's runs, by run then start."""
        q = select(_T).where(_T.c.job_id == job_id).order_by(_T.c.run, _T.c.started_at)
        with self._db.reader.connect() as c:
            return [
                TrainingCompute(
                    job_id=r.job_id,
                    run=r.run,
                    org_id=r.org_id,
                    model_id=r.model_id,
                    shape=r.shape,
                    cpus=float(r.cpus),
                    gpus=float(r.gpus),
                    started_at=cast(datetime, _utc(r.started_at)),
                    ended_at=cast(datetime, _utc(r.ended_at)),
                    price_version=r.price_version,
                    cost=int(r.cost),
                )
                for r in c.execute(q)
            ]

    def training_cost_by_day(self, first_day: str, last_day: str) -> list[dict[str, Any]]:
        """What fine-tuning runs cost the operator per UTC day and base model, for the days first_day..last_day
        (both included), summed in SQL: rows of day, `model_id`, `seconds`, `cost`."""
        q = (
            select(_T.c.day, _T.c.model_id, func.sum(_T.c.seconds).label("seconds"), func.sum(_T.c.cost).label("cost"))
            .where(_T.c.day >= first_day, _T.c.day <= last_day)
            .group_by(_T.c.day, _T.c.model_id)
        )
        with self._db.reader.connect() as c:
            return [
                {"day": r["day"], "model_id": r["model_id"], "seconds": int(r["seconds"]), "cost": int(r["cost"])}
                for r in c.execute(q).mappings()
            ]

    # -- prices -----------------------------------------------------------------------------------
    def add_price(self, shape: str, cost_per_hour: int, price_per_hour: int) -> ComputePriceRecord:
        """Append a new price version of a shape; intervals priced at earlier versions keep theirs."""
        for param, value in (("cost", cost_per_hour), ("price", price_per_hour)):
            if not 0 <= value <= MAX_PRICE_PER_HOUR:
                raise InvalidRequest(f"{param} must be between 0 and $100,000 per replica-hour", param=param)
        values = {"cost_per_hour": cost_per_hour, "price_per_hour": price_per_hour}
        version, created_at = add_version(self._db, _P, "shape", shape, values)
        return ComputePriceRecord(shape, version, cost_per_hour, price_per_hour, created_at)

    def prices(self) -> dict[str, ComputePriceRecord]:
        """The current (newest) compute price of every priced shape."""
        newest = select(_P.c.shape, func.max(_P.c.version).label("v")).group_by(_P.c.shape).subquery()
        q = select(_P).join(newest, and_(_P.c.shape == newest.c.shape, _P.c.version == newest.c.v))
        with self._db.reader.connect() as c:
            return {r.shape: _price(r) for r in c.execute(q)}

    def price_history(self, shape: str) -> list[ComputePriceRecord]:
        with self._db.reader.connect() as c:
            return [_price(r) for r in c.execute(select(_P).where(_P.c.shape == shape).order_by(_P.c.version))]

    # -- reading ----------------------------------------------------------------------------------
    def intervals(self, replica_id: str | None = None, deployment_id: str | None = None) -> list[ComputeInterval]:
        """Written intervals, in the order written (for operators' checks and tests, not the hot path)."""
        q = select(_U).order_by(_U.c.id)
        if replica_id is not None:
            q = q.where(_U.c.replica_id == replica_id)
        if deployment_id is not None:
            q = q.where(_U.c.deployment_id == deployment_id)
        with self._db.reader.connect() as c:
            return [_interval(r) for r in c.execute(q)]
