"""Dedicated deployments charged by the replica-second, through the money path requests take.

A deployment owned by one organization is billed as a request is, one billing interval at a time: a
hold taken before the compute is spent, settled with what was used. Each pass (`run_once`, every
billing interval, in the active controller's process) first meters every replica (metering/compute.py),
then, per dedicated deployment:

1. settles its open compute hold against the replica-seconds metered since, at the price the meter
   stamped on each interval: one usage record (endpoint `compute`, its `compute_seconds`) and one
   `charge` in the ledger, the intervals marked as charged in the same transaction (store/money/sql.py).
   Exactly once: a settlement flips its hold and marks exactly the intervals it names, or is rolled back.
   Compute that cost more than its hold (a replica placed after the hold was sized, a pass that ran
   late, a controller that was down) is charged from the balance left available, by a guarded update:
   a balance never goes below what is held. What the balance cannot cover stays unbilled, owed: it is
   charged first, at the next pass after credits arrive.
2. holds its next interval ahead: replicas (those running, or more if more are asked for) x interval x
   the shape's dedicated price. When the balance cannot cover it, or compute is owed, the deployment is
   scaled to zero (min 0) and its message says why; its owner sees it on the deployment. The replicas
   the controller then stops are metered to their stop and charged as far as the balance goes.

The first interval is held before it runs: creating a dedicated deployment, or scaling one up (by the
admin API or the autoscaler), first holds the next interval of the replicas it adds (`hold_ahead`, before
the record the controller acts on is written); an owner that cannot cover it is refused (PaymentRequired:
402 `insufficient_quota`; the autoscaler leaves the deployment as it is) and nothing is placed. The next
pass finds that hold and carries on from it (it settles it with the intervals metered and holds the next
one).

Crash-safe: a compute hold belongs to its deployment (`gateway_id` = `compute:<deployment>`), not to a
process, and gateway crash recovery leaves it alone; after any crash the next pass finds the open holds
and the unbilled intervals and settles them, never twice. The operator's own organizations hold nothing
and their compute is covered by `internal` entries, as their requests are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from yun.billing.service import BillingService
from yun.cluster.base import Resources
from yun.errors import InvalidRequest, NotFound, PaymentRequired, QuotaExceeded
from yun.metering import format_usd
from yun.metering.compute import ComputeMeter, per_replica_hour
from yun.store import Database, DeploymentRecord, DeploymentRepository
from yun.store.compute import ComputeInterval, ComputePriceRecord
from yun.store.money import COMPUTE_ENDPOINT, ComputeBill, HoldRecord, HoldRequest, SettleRecord, compute_holder

__all__ = ["BillingPass", "ComputeBilling"]

log = logging.getLogger("yun.billing")


@dataclass
class BillingPass:
    """What one pass did (for logs and tests)."""

    metered: int = 0
    """Intervals the meter wrote."""
    settled: int = 0
    """Compute holds settled."""
    charged: int = 0
    """Nanodollars charged (the operator's own use included)."""
    held: int = 0
    """Holds taken for the next interval."""
    scaled_to_zero: list[str] = field(default_factory=list)
    owed: dict[str, int] = field(default_factory=dict)
    """Per deployment, compute metered that the balance could not cover (nanodollars), still to charge."""


@dataclass(frozen=True)
class _Deployment:
    """One dedicated deployment as a pass bills it."""

    id: str
    org_id: str
    model_id: str
    record: DeploymentRecord | None
    """None once its row is gone (deleted): what is left is settled, nothing more is held."""
    holds: list[HoldRecord]
    intervals: list[ComputeInterval]
    replicas: int
    """Replicas to hold for: those running, or those asked for if more; 0 when it is not to run."""
    price: ComputePriceRecord | None
    """The current compute price of its shape (None: unpriced, or nothing to hold)."""


class ComputeBilling:
    def __init__(
        self,
        db: Database,
        billing: BillingService,
        deployments: DeploymentRepository,
        *,
        interval_s: int = 60,
        meter: ComputeMeter | None = None,
    ) -> None:
        self.billing = billing
        self.deployments = deployments
        self.interval_s = interval_s
        self.meter = meter or ComputeMeter(db)

    async def run(self, active: Callable[[], bool]) -> None:
        """`run_once` now and every `interval_s`, while `active()` (this process is the active controller)."""
        while True:
            if active():
                running = asyncio.ensure_future(self.run_once())
                try:
                    await asyncio.shield(running)
                except asyncio.CancelledError:
                    # Shutting down: the pass in flight (a thread) finishes its writes before the database
                    # closes; the next start would take them up anyway.
                    with contextlib.suppress(Exception):
                        await running
                    raise
                except Exception:  # noqa: BLE001 - the next pass takes up where this one stopped
                    log.exception("metering and billing compute failed")
            await asyncio.sleep(self.interval_s)

    async def run_once(self, now: datetime | None = None) -> BillingPass:
        """Meter every replica up to now, then settle and hold for every dedicated deployment (off the loop)."""
        return await asyncio.to_thread(self.bill, now)

    def bill(self, now: datetime | None = None) -> BillingPass:
        """`run_once`, blocking."""
        done = BillingPass(metered=len(self.meter.meter(now)))
        for d in self._deployments():
            try:
                self._bill(d, done)
            except Exception:  # noqa: BLE001 - one deployment's trouble must not stop the others' billing
                log.exception("billing the compute of deployment %s failed; the next pass retries", d.id)
        return done

    def hold_ahead(
        self, deployment_id: str, org_id: str | None, model_id: str, resources: Resources, replicas: int
    ) -> HoldRecord | None:
        """Hold the next billing interval of `replicas` more replicas of a dedicated deployment, before they
        are placed (blocking: off the loop). None when nothing is to be held (a shared deployment, the
        operator's own organization, no replica added, an unpriced shape). Raises PaymentRequired when the
        owner's available balance cannot cover it. A hold nothing follows must be `release`d."""
        if org_id is None or replicas <= 0 or org_id in self.billing.internal_orgs:
            return None
        price = self.billing.compute.prices().get(resources.shape)
        if price is None:
            return None
        amount = per_replica_hour(replicas * self.interval_s, price.price_per_hour)
        if amount <= 0:
            return None
        d = _Deployment(deployment_id, org_id, model_id, None, [], [], replicas, price)
        try:
            return self._reserve(d, amount)
        except QuotaExceeded as exc:
            raise PaymentRequired(
                f"{org_id} cannot cover the first {self.interval_s:g}s of {replicas} dedicated replica(s) of shape "
                f"{resources.shape} ({format_usd(amount)} USD, held before they start): {exc} Nothing was started.",
                param="owner",
            ) from exc

    def release(self, hold: HoldRecord, deployment_id: str) -> None:
        """Let go of a `hold_ahead` hold whose replicas were not asked for after all (nothing is charged)."""
        self._write(hold, deployment_id, [], hold.org_id in self.billing.internal_orgs)

    def _deployments(self) -> list[_Deployment]:
        compute = self.billing.compute
        holds = self.billing.money.compute_holds()
        unbilled = compute.unbilled()
        live = compute.live_replicas()
        dedicated = {d.id: d for d in self.deployments.list() if d.owner_org is not None}
        prices = compute.prices()
        running = {i for i, d in dedicated.items() if d.state == "active" and (d.desired_replicas or live.get(i))}
        out = []
        for dep in sorted(set(holds) | set(unbilled) | running):
            d, hs, rows = dedicated.get(dep), holds.get(dep, []), unbilled.get(dep, [])
            if d is not None:
                org, model = d.owner_org or "", d.model_id
            elif hs:
                org, model = hs[0].org_id, hs[0].model_id
            else:
                org, model = rows[0].owner_org or "", rows[0].model_id
            wanted = d is not None and d.state == "active" and d.desired_replicas > 0
            n = max(live.get(dep, 0), d.desired_replicas) if d is not None and wanted else 0
            shape = None if d is None else Resources(cpus=d.cpus, gpus=d.gpus, memory_mb=d.memory_mb).shape
            out.append(_Deployment(dep, org, model, d, hs, rows, n, None if shape is None else prices.get(shape)))
        return out

    def _bill(self, d: _Deployment, done: BillingPass) -> None:
        amount = self._next_hold(d)
        if not d.intervals and len(d.holds) == 1 and d.replicas and d.holds[0].amount == amount:
            return  # nothing metered since, and its hold already covers the next interval
        holds = d.holds
        owed = 0
        if d.intervals:
            carrier = holds[0] if holds else self._reserve(d, 0)
            owed = self._settle(carrier, d, d.intervals, done)
            holds = holds[1:]
        for extra in holds:  # more than one open (a pass cut short): release the others
            self._settle(extra, d, [], done)
        if owed:
            done.owed[d.id] = owed
            self._stop(d, f"{format_usd(owed)} USD of compute it used is unpaid", done)
        elif d.replicas:
            try:
                self._reserve(d, amount)
                done.held += 1
            except QuotaExceeded:
                need = f"the next {self.interval_s}s of {d.replicas} replica(s) need a hold of {format_usd(amount)} USD"
                self._stop(d, need, done)

    def _next_hold(self, d: _Deployment) -> int:
        """The hold that covers the deployment's next interval, at its shape's current price."""
        if d.record is None or not d.replicas or d.price is None or d.org_id in self.billing.internal_orgs:
            return 0
        return per_replica_hour(d.replicas * self.interval_s, d.price.price_per_hour)

    def _reserve(self, d: _Deployment, amount: int) -> HoldRecord:
        request = HoldRequest(
            request_id=f"cmp-{uuid.uuid4().hex}",
            org_id=d.org_id,
            key_id=COMPUTE_ENDPOINT,
            model_id=d.model_id,
            endpoint=COMPUTE_ENDPOINT,
            gateway_id=compute_holder(d.id),
            price_version=None if d.price is None else d.price.version,
            free_tokens_wanted=0,
            free_allowance=0,
            month=datetime.now(UTC).strftime("%Y-%m"),
            amount_for=lambda _free: amount,
        )
        return self.billing.writer.reserve(request).result()

    def _settle(self, hold: HoldRecord, d: _Deployment, rows: list[ComputeInterval], done: BillingPass) -> int:
        """Settle `hold` charging as many of `rows` (oldest first) as the hold and the balance left available
        cover; returns what the rest cost (owed, still unbilled)."""
        internal = hold.org_id in self.billing.internal_orgs
        take = rows
        if not internal:
            balance, held = self.billing.money.balance(hold.org_id)
            take = _affordable(rows, hold.amount + max(0, balance - held))
        try:
            settled = self._write(hold, d.id, take, internal)
        except QuotaExceeded:
            # Someone held part of that balance meanwhile: what the hold alone covers always settles.
            take = _affordable(rows, hold.amount)
            settled = self._write(hold, d.id, take, internal)
        if not settled:
            # Only another biller (a second controller) settles compute holds: leave it to the next pass.
            raise RuntimeError(f"compute hold {hold.request_id} was settled meanwhile by another biller")
        done.settled += 1
        done.charged += sum(i.price for i in take)
        return sum(i.price for i in rows[len(take) :])

    def _write(self, hold: HoldRecord, deployment_id: str, take: Sequence[ComputeInterval], internal: bool) -> bool:
        ids = [i.id or 0 for i in take]
        bill = ComputeBill(
            deployment_id=deployment_id,
            first_id=min(ids, default=0),
            last_id=max(ids, default=-1),
            intervals=len(take),
            seconds=sum(i.seconds for i in take),
            cost=sum(i.price for i in take),
        )
        rec = SettleRecord(
            replica=deployment_id,
            prompt_tokens=0,
            completion_tokens=0,
            cached_tokens=0,
            free_tokens=0,
            status="ok",
            latency_ms=0,
            ttft_ms=None,
            input_cost=0,
            cached_input_cost=0,
            output_cost=0,
            internal=internal,
            compute=bill,
        )
        return self.billing.writer.settle(hold, rec).result()

    def _stop(self, d: _Deployment, why: str, done: BillingPass) -> None:
        """Scale the deployment to zero for want of credit, and say so on it."""
        if d.record is None:
            return
        balance, held = self.billing.money.balance(d.org_id)
        message = (
            f"scaled to zero: no credit for its compute ({why}; {d.org_id} has {format_usd(balance - held)} USD "
            "available). Add credits, then scale it up again."
        )
        if d.record.desired_replicas or d.record.min_replicas:
            try:
                self.deployments.scale(d.id, 0, min_replicas=0)
            except (InvalidRequest, NotFound):
                return  # being deleted, or gone: its replicas stop anyway
            done.scaled_to_zero.append(d.id)
        self.deployments.set_message(d.id, message[:2000])
        log.warning("deployment %s %s", d.id, message)


def _affordable(rows: list[ComputeInterval], budget: int) -> list[ComputeInterval]:
    """The longest run of `rows`, oldest first, whose price `budget` covers."""
    total = 0
    for n, i in enumerate(rows):
        total += i.price
        if total > budget:
            return rows[:n]
    return rows
