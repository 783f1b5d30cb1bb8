"""The compute meter: every replica's life, cut into closed intervals of replica-seconds.

A replica holds compute from its registry `created_at` (when the controller placed it: from then on the
backend has reserved its CPUs, GPUs and memory and the engine is loading the model, which is work the
node does for this deployment) until its `stopped_at` (stopped, or failed). Loading time is metered on
purpose: a cold start costs the operator the same compute as serving, and for a dedicated deployment it
is compute its owner asked for. `ready_at` only tells when the replica could take requests.

Each run cuts, for every replica with compute left to meter, one interval from where its metering
stopped (its last interval's end, or its `created_at`) to now (a replica still running) or to its
`stopped_at` (its last interval, marked `final`). So a long-running replica is metered as it runs, and
after a crash the next run meters from the last written end to now: nothing twice (an interval is
unique on replica and start, and starts where the previous one ended), no gap.

Each interval is priced when it is metered, at the current version of its shape's compute prices
(`yun prices compute`): what it cost the operator, and, for a dedicated deployment, what its owner pays.
Metered every billing interval, it is priced within one interval of its use; a price change applies to
compute metered after it, never to an interval already written.

A fine-tuning job's runs are metered the same way, once each, when the run ends (`training_run`): from
its start to its end, cut at UTC midnights, at the cost price of the shape its trainer was placed with.

Boundaries are whole UTC seconds: the start rounded up, the end rounded down, so a replica is never
metered for a fraction of a second it did not hold (it may be metered up to one second less than it
held). Intervals never cross a UTC midnight (one that would is written as one per day), so daily
reports add whole intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from yun.store import Database
from yun.store.compute import ComputeInterval, ComputePriceRecord, ComputeRepository, MeterCandidate, TrainingCompute

__all__ = ["ComputeMeter", "ceil_second", "floor_second", "per_replica_hour", "split_at_midnights", "training_run"]

log = logging.getLogger("yun.metering")

_UNKNOWN_MODEL = ""


def per_replica_hour(seconds: int, nanodollars_per_hour: int) -> int:
    """What `seconds` of one replica cost at a price per replica-hour, rounded up to the nanodollar."""
    return -(-seconds * nanodollars_per_hour // 3600)


def floor_second(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(microsecond=0)


def ceil_second(t: datetime) -> datetime:
    down = floor_second(t)
    return down if down == t else down + timedelta(seconds=1)


def split_at_midnights(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end] as consecutive pieces that each lie within one UTC day ([start, start] if empty)."""
    pieces = []
    while True:
        midnight = datetime.combine(start.date() + timedelta(days=1), datetime.min.time(), UTC)
        if end <= midnight:
            pieces.append((start, end))
            return pieces
        pieces.append((start, midnight))
        start = midnight


class ComputeMeter:
    """Writes the compute usage of every replica in the registry (`replicas`), reading nothing of the
    controller but that table. The active controller's process runs it every billing interval, through
    billing/compute.py's `ComputeBilling`, which bills what it metered. Any number of runs, a crash
    between two, or a second meter racing it, meter each second of a replica's life once."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.repo = ComputeRepository(db)
        self._clock = clock or (lambda: datetime.now(UTC))

    async def run_once(self, now: datetime | None = None) -> list[ComputeInterval]:
        """Meter everything up to now (off the event loop); returns the intervals this run wrote."""
        return await asyncio.to_thread(self.meter, now)

    def meter(self, now: datetime | None = None) -> list[ComputeInterval]:
        """`run_once`, blocking. `now` is taken before the registry is read: a replica seen running is
        metered up to a moment it was running at."""
        cut = floor_second(now or self._clock())
        pending: list[ComputeInterval] = []
        attributions: dict[str, tuple[str | None, str]] = {}
        prices = self.repo.prices()
        for c in self.repo.candidates():
            if c.deployment is None and c.deployment_id not in attributions:
                attributions[c.deployment_id] = self._attribution(c)
            owner, model = c.deployment or attributions[c.deployment_id]
            pending += _cut(c, cut, owner, model, prices.get(c.shape))
        written = self.repo.record(pending, now=datetime.now(UTC)) if pending else []
        if len(written) < len(pending):
            log.info("compute meter: %d interval(s) were written already", len(pending) - len(written))
        return written

    def _attribution(self, c: MeterCandidate) -> tuple[str | None, str]:
        found = self.repo.last_attribution(c.deployment_id)
        if found is None:
            log.warning(
                "replica %s: its deployment %s is gone and was never metered; metered as shared compute",
                c.replica_id,
                c.deployment_id,
            )
            return None, _UNKNOWN_MODEL
        return found


def _cut(
    c: MeterCandidate, now: datetime, owner: str | None, model: str, price: ComputePriceRecord | None = None
) -> list[ComputeInterval]:
    """The intervals that meter `c` up to `now` (or to its stop), priced at `price` (None: free): none
    if less than a second is left."""
    start = c.metered_until or ceil_second(c.created_at)
    if c.stopped_at is None:
        end, final = now, False
        if end <= start:
            return []
    else:
        # Its last interval, even an empty one: it marks the replica as metered to its end.
        end, final = max(start, floor_second(c.stopped_at)), True
    pieces = split_at_midnights(start, end)
    cost_per_hour = 0 if price is None else price.cost_per_hour
    # Shared compute is the operator's: nobody pays for it by the second.
    price_per_hour = 0 if price is None or owner is None else price.price_per_hour
    return [
        ComputeInterval(
            replica_id=c.replica_id,
            deployment_id=c.deployment_id,
            owner_org=owner,
            model_id=model,
            shape=c.shape,
            node=c.node,
            started_at=a,
            ended_at=b,
            final=final and i == len(pieces) - 1,
            price_version=None if price is None else price.version,
            cost=per_replica_hour(_seconds(a, b), cost_per_hour),
            price=per_replica_hour(_seconds(a, b), price_per_hour),
        )
        for i, (a, b) in enumerate(pieces)
    ]


def _seconds(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds())


def training_run(
    template: TrainingCompute, start: datetime, end: datetime, price: ComputePriceRecord | None
) -> list[TrainingCompute]:
    """One run of a job from `start` to `end` as pieces within one UTC day each (whole seconds, as replicas
    are metered: a run shorter than a second is one empty piece), each priced at `price`'s cost per
    shape-hour (None: the shape has no price, the run cost nothing). `template` names the job, run, org,
    model and shape."""
    a = ceil_second(start)
    b = max(a, floor_second(end))
    cost_per_hour = 0 if price is None else price.cost_per_hour
    version = None if price is None else price.version
    return [
        TrainingCompute(
            job_id=template.job_id,
            run=template.run,
            org_id=template.org_id,
            model_id=template.model_id,
            shape=template.shape,
            cpus=template.cpus,
            gpus=template.gpus,
            started_at=x,
            ended_at=y,
            price_version=version,
            cost=per_replica_hour(_seconds(x, y), cost_per_hour),
        )
        for x, y in split_at_midnights(a, b)
    ]
