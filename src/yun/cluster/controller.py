"""The controller: makes the replicas a `Cluster` backend runs match the deployments, and writes down
where each one answers (the replica registry) for the gateways.

One pass (`reconcile`), every second or so and whenever told something changed:
1. ask the backend what runs (`Cluster.replicas()`) and bring the registry in line: a new endpoint after
   a restart (maybe on another node), a replica that failed, one the backend no longer has (stopped);
   a replica the backend runs that no deployment wants is stopped;
2. per deployment, place replicas of its current generation until `desired` are live; stop the extras;
   roll older generations over (new replicas ready first, then the old ones drain: the gateways, which
   see the registry within a second, stop sending them requests, and each stops once its engine reports
   nothing running or queued (its /metrics), so a long stream is never cut by an update or a scale-down;
   an engine that does not report its work gets `drain_s`, one that reports work at most `drain_max_s`);
3. a deployment being deleted has its replicas stopped, then its record removed.

Before converging, the autoscaler (cluster/autoscale.py) moves `desired` of the deployments that have a
policy or an idle timeout, from the load gateways publish (cluster/load.py), and writes it to their
record: an unreadable load changes nothing. A replica that goes because the count went down drains
first, as in a rolling update.

A replica that cannot start is `failed` with the backend's reason; its deployment backs off
(exponentially, up to `max_backoff_s`) before the next attempt, so a model that cannot load does not spin
the machine, and says why in its message. Nothing here blocks the event loop on the database for long:
registry writes are small single-row transactions, run in a thread.

The registry row of a replica is written before the backend is asked to place it: a controller that dies
mid-placement leaves a row that its successor reconciles (adopted if the backend runs it, else stopped).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Literal, Protocol

from yun.cluster.autoscale import Autoscaler, Policy, Scaling
from yun.cluster.base import Cluster, EngineArgs, ReplicaOrder, ReplicaStatus, Resources
from yun.cluster.load import Load, LoadBoard
from yun.engines import OpenAIHTTPEngine
from yun.errors import EngineUnavailable, YunError
from yun.store.replicas import RegistryEntry, ReplicaRepository

__all__ = ["Controller", "DeploymentStore", "ModelSource", "Wanted"]

log = logging.getLogger("yun.cluster")


@dataclass(frozen=True)
class Wanted:
    """A deployment as the controller acts on it (from the deployments table)."""

    id: str
    model_id: str
    desired: int
    generation: int
    engine: Literal["llamacpp", "vllm"] = "llamacpp"
    resources: Resources = Resources()
    args: EngineArgs = EngineArgs()
    command: tuple[str, ...] | None = None
    deleting: bool = False
    min_replicas: int = 0
    max_replicas: int = 0
    autoscale: Policy | None = None
    idle_timeout_s: float | None = None
    blocked: bool = False
    """Its record says why it is not running (failed starts, no credit for it)."""

    @property
    def scaling(self) -> Scaling:
        return Scaling(
            self.id,
            self.desired,
            self.min_replicas,
            self.max_replicas,
            self.autoscale,
            self.idle_timeout_s,
            blocked=self.blocked,
        )


class DeploymentStore(Protocol):
    """Where the controller reads deployments and reports on them (the deployments repository)."""

    def wanted(self) -> Sequence[Wanted]: ...

    def scale(self, deployment_id: str, desired: int, *, was: int) -> bool:
        """Set the desired count (the autoscaler's decision, within the deployment's bounds) if it is still
        `was`; False if someone else changed it first (their change stands)."""
        ...

    def set_message(self, deployment_id: str, message: str) -> None: ...

    def remove(self, deployment_id: str) -> None: ...


ModelSource = Callable[[str], tuple[str, Literal["chat", "embedding"]] | None]
"""model id -> (weights path, kind), or None when the catalog no longer has a local model of that id."""


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0
    last_error: str = ""


DRAIN_MIN_S = 1.5
"""A draining replica keeps its engine at least this long (gateways follow the registry within a second:
a request one of them sent just before it saw the change still arrives)."""


def drain_done(elapsed: float, work: int | None, drain_s: float, drain_max_s: float) -> bool:
    """The drain rule, given what the engine says is running or queued (`work`; None: it does not say)."""
    if work == 0:
        return elapsed >= min(DRAIN_MIN_S, drain_s)
    if work is None:
        return elapsed >= drain_s
    return elapsed >= max(drain_s, drain_max_s)


class Controller:
    def __init__(
        self,
        backend: Cluster,
        deployments: DeploymentStore,
        registry: ReplicaRepository,
        models: ModelSource,
        *,
        start_timeout_s: float = 120.0,
        drain_s: float = 5.0,
        drain_max_s: float = 600.0,
        max_backoff_s: float = 300.0,
        on_change: Callable[[], None] | None = None,
        loads: LoadBoard | None = None,
        autoscaler: Autoscaler | None = None,
    ) -> None:
        self.backend = backend
        self.deployments = deployments
        self.registry = registry
        self.models = models
        self.start_timeout_s = start_timeout_s
        self.drain_s = drain_s
        self.drain_max_s = drain_max_s
        self.max_backoff_s = max_backoff_s
        self.on_change = on_change or (lambda: None)
        self.loads = loads
        """Where gateways publish their load; None: no autoscaling."""
        self.autoscaler = autoscaler or Autoscaler()
        self._placing: dict[str, asyncio.Task[None]] = {}
        self._refused: dict[str, str] = {}  # deployment -> why the autoscaler last could not move it
        self._backoff: dict[str, _Backoff] = {}
        self._draining: dict[str, float] = {}  # replica id -> when it started draining
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    async def settled(self) -> None:
        """Wait until every placement under way has ended (ready or failed)."""
        while self._placing:
            await asyncio.gather(*list(self._placing.values()), return_exceptions=True)

    def poke(self) -> None:
        """Reconcile now (a deployment was created, scaled, updated or deleted)."""
        self._wake.set()

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - one bad pass must not stop the loop that keeps replicas alive
                log.exception("reconciling deployments failed")
            try:
                await asyncio.wait_for(self._wake.wait(), interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def reconcile(self) -> None:
        async with self._lock:
            wanted = {w.id: w for w in await asyncio.to_thread(self.deployments.wanted)}
            wanted = await self._autoscale(wanted)
            entries = await asyncio.to_thread(self.registry.live)
            running = {s.replica_id: s for s in await self.backend.replicas()}
            changed = await self._sync(entries, running, wanted)
            if changed:
                entries = await asyncio.to_thread(self.registry.live)
            by_deployment: dict[str, list[RegistryEntry]] = {}
            for e in entries:
                by_deployment.setdefault(e.deployment_id, []).append(e)
            for w in wanted.values():
                changed |= await self._converge(w, by_deployment.get(w.id, []))
            if changed:
                self.on_change()

    # -- 0. the autoscaler moves `desired` ------------------------------------------------------------
    async def _autoscale(self, wanted: dict[str, Wanted]) -> dict[str, Wanted]:
        self.autoscaler.forget(wanted)
        scaled = [w for w in wanted.values() if not w.deleting and w.scaling.scaled]
        if self.loads is None or not scaled:
            return wanted
        try:
            loads = await asyncio.to_thread(self.loads.totals, [w.id for w in scaled])
        except Exception:  # noqa: BLE001 - an unknown load is not a zero load: scale nothing this pass
            log.exception("reading the gateways' load failed; no autoscaling this pass")
            return wanted
        for w in scaled:
            load = loads.get(w.id, Load())
            desired = self.autoscaler.decide(w.scaling, load)
            if desired == w.desired:
                continue
            try:
                moved = await asyncio.to_thread(partial(self.deployments.scale, w.id, desired, was=w.desired))
            except YunError as exc:
                # Deleted or re-bounded meanwhile (the next pass sees the new record), or an owner who cannot
                # pay for more dedicated replicas (asked again on later passes: said once until it changes).
                if self._refused.get(w.id) != exc.message:
                    log.info("autoscaling %s to %d skipped: %s", w.id, desired, exc.message)
                self._refused[w.id] = exc.message
                continue
            self._refused.pop(w.id, None)
            if not moved:
                continue  # an operator or the biller changed it since this pass read it: theirs stands
            log.info(
                "autoscaled %s from %d to %d replicas (queued %d, in flight %d)",
                w.id, w.desired, desired, load.queued, load.in_flight,
            )  # fmt: skip
            wanted[w.id] = replace(w, desired=desired)
        return wanted

    # -- 1. the registry follows the backend ------------------------------------------------------
    async def _sync(
        self, entries: list[RegistryEntry], running: dict[str, ReplicaStatus], wanted: dict[str, Wanted]
    ) -> bool:
        changed = False
        known = {e.id for e in entries}
        for e in entries:
            if e.id in self._placing:
                continue  # its placement task writes its row
            status = running.get(e.id)
            if status is None:
                # The backend does not run it (it died with a previous controller's local processes, or
                # was stopped): it holds no compute any more.
                if e.state != "stopped":
                    await self._write(e.id, state="stopped", endpoint=None, stopped_at=_now())
                    changed = True
                continue
            state = "draining" if e.state == "draining" else status.state
            update: dict[str, object] = {
                k: v
                for k, v in (
                    ("state", state),
                    ("endpoint", status.endpoint),
                    ("node", status.node),
                    ("restarts", status.restarts),
                    ("error", status.error),
                )
                if getattr(e, k) != v
            }
            if state == "ready" and e.ready_at is None:
                update["ready_at"] = _now()
            if state in ("failed", "stopped"):
                update["stopped_at"] = _now()
                update["endpoint"] = None
            if update:
                if state == "failed":  # why first: whoever sees the failed replica also sees the reason
                    await self._failed(e.deployment_id, status.error or "the replica failed")
                await self._write(e.id, **update)
                changed = True
        for replica_id, status in running.items():
            if replica_id not in known and replica_id not in self._placing and status.state != "stopped":
                # Runs, but no live registry row wants it (its deployment went while we were down).
                log.info("stopping replica %s: no deployment wants it", replica_id)
                await self.backend.stop(replica_id)
                changed = True
        return changed

    # -- 2. each deployment converges on what it wants --------------------------------------------------
    async def _converge(self, w: Wanted, entries: list[RegistryEntry]) -> bool:
        if w.deleting:
            return await self._delete(w, entries)
        entries, revived = await self._revive(w, entries)
        live = [e for e in entries if e.state in ("starting", "ready", "restarting")]
        current = [e for e in live if e.generation == w.generation]
        scaled = await self._scale(w, current)
        rolled = await self._roll(w, current, entries)
        return revived or scaled or rolled

    async def _revive(self, w: Wanted, entries: list[RegistryEntry]) -> tuple[list[RegistryEntry], bool]:
        """Replicas of the current generation still draining after a scale-down are taken back into
        rotation, rather than started anew, when the count goes up again (a cold start saved)."""
        live = sum(e.state in ("starting", "ready", "restarting") and e.generation == w.generation for e in entries)
        missing = w.desired - live
        if missing <= 0:
            return entries, False
        out, revived = [], False
        for e in entries:
            if missing > 0 and e.state == "draining" and e.generation == w.generation:
                await self._write(e.id, state="ready")
                self._draining.pop(e.id, None)
                e = replace(e, state="ready")
                missing -= 1
                revived = True
            out.append(e)
        return out, revived

    async def _delete(self, w: Wanted, entries: list[RegistryEntry]) -> bool:
        for e in entries:
            if e.id not in self._placing:
                await self._stop(e)
        if not entries:
            await asyncio.to_thread(self.deployments.remove, w.id)
            self._backoff.pop(w.id, None)
            log.info("deployment %s removed", w.id)
        return True

    async def _scale(self, w: Wanted, current: list[RegistryEntry]) -> bool:
        """Take the current generation's extras away (not yet ready first, stopped at once; then the newest
        ready ones, drained: gateways stop sending them requests, those they have get `drain_s`), or place
        the missing ones unless the deployment is backing off after failures."""
        extra = len(current) - w.desired
        if extra > 0:
            for e in sorted(current, key=lambda e: (e.state == "ready", e.created_at))[:extra]:
                task = self._placing.pop(e.id, None)
                if task is not None:
                    task.cancel()
                if e.state == "ready" and task is None:
                    await self._write(e.id, state="draining")
                    self._draining[e.id] = time.monotonic()
                else:
                    await self._stop(e)
            return True
        backoff = self._backoff.get(w.id)
        if extra == 0 or (backoff is not None and time.monotonic() < backoff.until):
            return False
        source = await asyncio.to_thread(self.models, w.model_id)
        if source is None:
            await asyncio.to_thread(
                self.deployments.set_message, w.id, f"the model {w.model_id!r} is not in the catalog"
            )
            return False
        for _ in range(-extra):
            await self._place(w, source)
        return True

    async def _roll(self, w: Wanted, current: list[RegistryEntry], entries: list[RegistryEntry]) -> bool:
        """Rolling update: older generations drain once the current one has all the ready replicas it
        wants (new ready before old gone); a draining replica stops after `drain_s`."""
        changed = False
        ready_new = sum(e.state == "ready" for e in current)
        if ready_new >= w.desired:
            for e in entries:
                if e.generation != w.generation and e.state in ("starting", "ready", "restarting"):
                    await self._write(e.id, state="draining")
                    self._draining[e.id] = time.monotonic()
                    changed = True
        for e in entries:
            if e.state != "draining":
                continue
            since = self._draining.setdefault(e.id, time.monotonic())
            if await self._drained(e, time.monotonic() - since):
                await self._stop(e)
                self._draining.pop(e.id, None)
                changed = True
        return changed

    async def _drained(self, e: RegistryEntry, elapsed: float) -> bool:
        """Whether a replica draining for `elapsed` seconds may stop: once every gateway has seen it leave
        rotation (DRAIN_MIN_S) and its engine runs nothing; without word from its engine, after `drain_s`;
        with work still running, after `drain_max_s` at most."""
        if elapsed < min(DRAIN_MIN_S, self.drain_s):
            return False
        work = None
        if e.endpoint is not None:
            probe = OpenAIHTTPEngine(f"replica {e.id}", e.endpoint, api_key=e.secret or None, keep_alive=False)
            try:
                work = await probe.in_flight()
            finally:
                await probe.aclose()
        return drain_done(elapsed, work, self.drain_s, self.drain_max_s)

    async def _place(self, w: Wanted, source: tuple[str, Literal["chat", "embedding"]]) -> None:
        path, kind = source
        replica_id = f"{_slug(w.id)}-{uuid.uuid4().hex[:8]}"
        secret = secrets.token_urlsafe(32)
        order = ReplicaOrder(
            replica_id=replica_id,
            deployment_id=w.id,
            model_id=w.model_id,
            kind=kind,
            engine=w.engine,
            model_path=path,
            secret=secret,
            args=w.args,
            resources=w.resources,
            start_timeout_s=self.start_timeout_s,
            command=w.command,
        )
        await asyncio.to_thread(
            self.registry.add,
            replica_id,
            w.id,
            w.generation,
            self.backend.name,
            w.resources.shape,
            secret,
            w.args.lora,
        )
        self._placing[replica_id] = asyncio.get_running_loop().create_task(
            self._placed(order), name=f"yun-place-{replica_id}"
        )

    async def _placed(self, order: ReplicaOrder) -> None:
        try:
            status = await self.backend.place(order)
        except asyncio.CancelledError:
            await self.backend.stop(order.replica_id)
            await self._write(order.replica_id, state="stopped", endpoint=None, stopped_at=_now())
            raise
        except EngineUnavailable as exc:
            log.error("replica %s of %s failed to start: %s", order.replica_id, order.deployment_id, exc)
            await self.backend.stop(order.replica_id)
            await self._failed(order.deployment_id, str(exc))
            await self._write(order.replica_id, state="failed", error=str(exc), stopped_at=_now())
        else:
            await self._write(
                order.replica_id,
                state=status.state,
                endpoint=status.endpoint,
                node=status.node,
                ready_at=_now() if status.state == "ready" else None,
            )
            self._backoff.pop(order.deployment_id, None)
            await asyncio.to_thread(self.deployments.set_message, order.deployment_id, "")
        finally:
            self._placing.pop(order.replica_id, None)
            self.on_change()
            self.poke()

    async def _failed(self, deployment_id: str, error: str) -> None:
        """Back the deployment off and say why on it (before its replica is written as failed)."""
        b = self._backoff.setdefault(deployment_id, _Backoff())
        b.failures += 1
        b.last_error = error
        delay = min(self.max_backoff_s, 2.0**b.failures)
        b.until = time.monotonic() + delay
        message = f"replica failed ({b.failures} in a row), next try in {delay:.0f}s: {error}"
        try:
            await asyncio.to_thread(self.deployments.set_message, deployment_id, message[:2000])
        except Exception:  # noqa: BLE001 - the message is for people; the backoff holds regardless
            log.exception("could not record why deployment %s failed", deployment_id)

    async def _stop(self, e: RegistryEntry) -> None:
        await self.backend.stop(e.id)
        await self._write(e.id, state="stopped", endpoint=None, stopped_at=_now())

    async def _write(self, replica_id: str, **changes: object) -> None:
        await asyncio.to_thread(self.registry.update, replica_id, **changes)

    async def close(self, *, stop_replicas: bool) -> None:
        for task in list(self._placing.values()):
            task.cancel()
        await asyncio.gather(*self._placing.values(), return_exceptions=True)
        if stop_replicas:
            for e in await asyncio.to_thread(self.registry.live):
                await self._stop(e)
        await self.backend.close(stop_replicas=stop_replicas)


def _now() -> datetime:
    return datetime.now(UTC)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:60]
