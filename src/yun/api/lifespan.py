"""Start-up and shut-down: the controller (unless this is a gateway only) places every deployment's
replicas and autoscales them; the gateway (unless this is a controller only) follows the replica registry
and publishes its load for the autoscaler."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from fastapi import FastAPI

from yun.api.control import (
    DeploymentRecords,
    ensure_default_deployments,
    make_backend,
    model_source,
    refresh_routes,
    spec_for,
)
from yun.api.services import Services
from yun.cluster.controller import Controller
from yun.cluster.load import LoadPublisher
from yun.jobs.fine_tuning.runner import FineTuningRunner, RunnerConfig
from yun.store.leadership import Leadership

__all__ = ["lifespan", "spec_for", "sync_deployments"]

log = logging.getLogger("yun")

_CHECKPOINT_EVERY_S = 0.25
_GIL_SWITCH_S = 0.0005
"""How long a thread may hold the GIL while another waits for it (Python's default: 5 ms)."""
_ROUTES_POLL_S = 0.5
_STAND_BY_POLL_S = 1.0
_ROUTES_FULL_EVERY = 8  # polls; the catalog (external models, cards) is re-read at least this often


async def sync_deployments(services: Services) -> None:
    """Bring everything in step now, and wait for it: catalog models get their deployments, the controller
    (if this process runs one) places or stops replicas and waits for the placements, and this gateway's
    routes follow. Start-up runs it; so do tests after changing the catalog."""
    controller = services.controller
    if controller is not None:
        await asyncio.to_thread(ensure_default_deployments, services)
        await controller.reconcile()
        await controller.settled()
    if services.settings.cluster.role != "controller":
        await refresh_routes(services)


def _poke_controller(services: Services) -> None:
    """The controller in this process (role `all`) reads the load just published at once: a request
    waiting for a deployment at zero starts its replica a reconcile interval sooner."""
    if services.controller is not None:
        services.controller.poke()


async def _keep_in_sync(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.engine.health_interval_s * 2)
        try:
            if services.controller is not None:  # models added or removed by `yun models` meanwhile
                await asyncio.to_thread(ensure_default_deployments, services)
                services.controller.poke()
            await services.router.check_external()
            services.router.set_weights(await asyncio.to_thread(services.orgs.weights))
            await asyncio.to_thread(services.keys.flush_last_used)
            # A gateway that died (its lease expired) leaves holds no request of its own can still settle.
            await asyncio.to_thread(_recover, services, False)
        except Exception:  # noqa: BLE001 - a bad catalog row must not stop the loop that serves the rest
            log.exception("catalog sync failed")


async def _keep_routes(services: Services, changed: asyncio.Event) -> None:
    """Follow the registry: poll its version (one aggregate query) a few times a second, and rebuild the
    routes when it, the deployments or the catalog moved, or at once when this process's controller says
    it changed something."""
    seen: object = None
    ticks = 0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), _ROUTES_POLL_S)
        poked = changed.is_set()
        changed.clear()
        ticks += 1
        try:
            version = await asyncio.to_thread(_fingerprint, services)
            if poked or version != seen or ticks % _ROUTES_FULL_EVERY == 0:
                seen = version
                await refresh_routes(services)
        except Exception:  # noqa: BLE001 - the routes it has keep serving; the next poll tries again
            log.exception("refreshing routes from the registry failed")


def _fingerprint(services: Services) -> object:
    # The message too: a deployment that starts failing (or loses its credit) must stop making requests
    # wait for its cold start at once, and `set_message` moves nothing else.
    deployments = tuple(
        (d.id, d.generation, d.desired_replicas, d.state, d.message, d.updated_at) for d in services.deployments.list()
    )
    return services.registry.version(), deployments


def _recover(services: Services, exclusive: bool) -> int:
    """Settle the holds of dead gateways (never a live one's: see BillingService.recover), then forget
    the dead instances that own nothing any more."""
    settled = services.billing.recover(
        exclusive=exclusive, orphaned_after_s=services.settings.engine.request_timeout_s * 2
    )
    services.instances.forget_dead(exclusive_of=services.instance_id if exclusive else None)
    return settled


def _lease(services: Services, *, renew: bool) -> bool:
    """Register this gateway's lease, or renew it; False if it had lapsed (it is then registered again)."""
    if renew and services.instances.renew(services.instance_id, services.settings.server.lease_s):
        return True
    services.instances.register(
        services.instance_id,
        services.settings.gateway_id,
        socket.gethostname(),
        os.getpid(),
        services.settings.server.lease_s,
    )
    return not renew


async def _keep_lease(services: Services) -> None:
    """Renew this gateway's lease three times per lease period, off the event loop, on a thread of its own:
    a renewal never waits behind slow work (reports, recovery) queued on the shared thread pool."""
    loop = asyncio.get_running_loop()
    renewer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="yun-lease")
    try:
        while True:
            await asyncio.sleep(services.settings.server.lease_s / 3)
            try:
                renewed = await loop.run_in_executor(renewer, partial(_lease, services, renew=True))
            except Exception:  # noqa: BLE001 - the next renewal tries again; the lease outlasts a few misses
                log.exception("renewing the gateway lease failed")
                continue
            if not renewed:
                log.warning(
                    "this gateway's lease had expired and was taken for dead; requests it had open may have "
                    "been settled as interrupted by another gateway (never twice)"
                )
    finally:
        renewer.shutdown(wait=False)  # a renewal in flight finishes on its own; the loop never waits for it


async def _take_over(services: Services, routes_changed: asyncio.Event) -> None:
    """This process became the active controller: connect its backend and build the controller (whose
    first pass adopts the replicas a predecessor left running, and places what is missing)."""
    backend = services.backend or make_backend(services.settings)
    services.backend = None  # used once: a later take-over connects afresh
    await backend.start()
    e = services.settings.engine
    services.controller = Controller(
        backend,
        DeploymentRecords(services),
        services.registry,
        partial(model_source, services),
        start_timeout_s=e.start_timeout_s,
        drain_s=e.drain_s,
        drain_max_s=e.drain_max_s,
        on_change=routes_changed.set,
        loads=services.loads,
    )
    jobs = services.settings.jobs
    services.job_runner = FineTuningRunner(
        services.fine_tuning,
        backend,
        RunnerConfig(
            work_dir=services.settings.jobs_dir,
            adapters_dir=services.settings.adapters_dir,
            max_running=jobs.max_running,
            threads=jobs.threads,
            owner=services.instance_id,
            command=None if jobs.trainer_command is None else tuple(jobs.trainer_command),
            options=tuple(jobs.trainer_options.items()),
        ),
    )
    log.info("this process is the active controller (cluster backend: %s)", backend.name)


async def _step_down(services: Services) -> None:
    """Stop acting as the controller. Local replicas are this process's children and stop with it; Ray's
    keep running for the controller that takes over (it adopts them)."""
    controller, services.controller = services.controller, None
    services.job_runner = None
    if controller is not None:
        await controller.close(stop_replicas=controller.backend.name == "local")


async def _stand_for_controller(services: Services, leadership: Leadership, routes_changed: asyncio.Event) -> None:
    """Run the controller while this process holds the controller lock; stand by (try again every
    second) while another does. A lost lock (the database connection died) stops it at once."""
    running: asyncio.Task[None] | None = None
    training: asyncio.Task[None] | None = None
    try:
        while True:
            if services.controller is None and await asyncio.to_thread(leadership.try_acquire):
                try:
                    await _take_over(services, routes_changed)
                except Exception:  # noqa: BLE001 - e.g. the Ray cluster is unreachable: stand by, retry
                    log.exception("could not take over as the controller")
                    await asyncio.to_thread(leadership.release)
            elif services.controller is not None and not await asyncio.to_thread(leadership.check):
                log.error("this process is no longer the active controller")
                for task in (running, training):
                    if task is not None:
                        task.cancel()
                running = training = None
                await _step_down(services)
            if services.controller is not None and running is None:
                running = asyncio.create_task(services.controller.run(), name="yun-reconcile")
            if services.job_runner is not None and training is None:
                training = asyncio.create_task(services.job_runner.run_forever(), name="yun-fine-tuning")
            await asyncio.sleep(_STAND_BY_POLL_S)
    finally:
        for task in (running, training):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    # This process's lease first, renewed from now on (a model load can outlast a short lease): every hold
    # it takes belongs to it, and no other gateway touches them while the lease is renewed.
    await asyncio.to_thread(_lease, services, renew=False)
    lease = asyncio.create_task(_keep_lease(services), name="yun-gateway-lease")
    # Reservations left open by gateways that died are settled before this one takes new work. Under
    # the data-dir lock of an embedded database no other gateway can be alive, so that is all of them.
    await asyncio.to_thread(_recover, services, services.exclusive)
    # Holds and settlements of an embedded database are group-committed on this loop (see store/money/writer.py).
    services.billing.writer.bind_loop(asyncio.get_running_loop())
    routes_changed = asyncio.Event()
    role = services.settings.cluster.role
    leadership = Leadership(services.db.url)
    if role != "gateway" and await asyncio.to_thread(leadership.try_acquire):
        await _take_over(services, routes_changed)
    await sync_deployments(services)
    services.router.set_weights(await asyncio.to_thread(services.orgs.weights))
    tasks = [asyncio.create_task(_keep_in_sync(services), name="yun-catalog-sync")]
    if role != "gateway":
        tasks.append(
            asyncio.create_task(_stand_for_controller(services, leadership, routes_changed), name="yun-controller")
        )
        # Hook (compute metering): the active controller's process meters every replica's seconds.
        metering = services.compute.run(lambda: services.controller is not None)
        tasks.append(asyncio.create_task(metering, name="yun-compute"))
    publisher = None
    if role != "controller":
        tasks.append(asyncio.create_task(_keep_routes(services, routes_changed), name="yun-routes"))
        publisher = LoadPublisher(
            services.router,
            services.loads,
            services.instance_id,
            services.settings.cluster.load_interval_s,
            woken=partial(_poke_controller, services),
        )
        tasks.append(asyncio.create_task(publisher.run(), name="yun-load"))
    services.db.start_checkpoints(_CHECKPOINT_EVERY_S)
    # Everything built so far (libraries, app, services) lives for the whole process: move it out of
    # the cyclic collector's reach, so full collections scan only per-request garbage. Without this,
    # gen-2 collections over the start-up heap showed up as tens-of-ms stalls in the latency tail.
    gc.collect()
    gc.freeze()
    # The request path's helpers (the money writer, the WAL checkpointer, `to_thread` reads) run Python in
    # threads beside the event loop; a thread that holds the GIL keeps the loop waiting up to the switch
    # interval (5 ms by default) before it must let go. Measured at concurrency 1 (bench/gateway_overhead.py
    # --api chat and messages, 3 runs each way, 12 rows of non-stream and stream): with 5 ms, 2 rows had p99
    # +6.4 and +9.3 ms added; with 0.5 ms none above +3.4 ms, and CPU per request no higher.
    switch_was = sys.getswitchinterval()
    sys.setswitchinterval(_GIL_SWITCH_S)
    try:
        yield
    finally:
        sys.setswitchinterval(switch_was)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if publisher is not None:
            with contextlib.suppress(Exception):  # its TTL takes it away regardless
                await publisher.withdraw()
        await services.router.close()
        await _step_down(services)
        await asyncio.to_thread(leadership.release)
        await asyncio.to_thread(services.keys.flush_last_used)
        # A clean stop leaves nothing for recovery: what is queued is written, what a request left open
        # is settled at its last progress, and only then does the lease end.
        services.billing.writer.bind_loop(None)
        await asyncio.to_thread(services.billing.settle_own)
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
        await asyncio.to_thread(services.instances.end, services.instance_id)
        services.loads.close()
        services.db.dispose()
