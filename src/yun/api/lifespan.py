"""Start-up and shut-down: deploy every catalog model, keep deployments in step with the catalog."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Literal

from fastapi import FastAPI

from yun.api.services import Services
from yun.catalog import served_context
from yun.cluster import ReplicaSpec
from yun.store import ModelRecord

__all__ = ["lifespan", "spec_for", "sync_deployments"]

log = logging.getLogger("yun")

_CHECKPOINT_EVERY_S = 0.25


def spec_for(m: ModelRecord, context_per_slot: int) -> ReplicaSpec:
    kind: Literal["chat", "embedding"] = "embedding" if m.kind == "embedding" else "chat"
    dims = m.card.get("dimensions") or (m.card.get("embedding_length") if kind == "embedding" else None)
    return ReplicaSpec(
        model_id=m.id,
        kind=kind,
        path=m.path,
        url=m.url,
        api_key=m.upstream_key,
        upstream_model=m.upstream_model,
        replicas=m.replicas,
        dimensions=dims if m.source != "external" else None,
        context_length=served_context(m, context_per_slot),
    )


async def sync_deployments(services: Services) -> None:
    """Deploy models added to the catalog (by `yun models add`, maybe in another process) and
    retire removed ones."""
    wanted = {m.id: m for m in await asyncio.to_thread(services.catalog.list)}
    current = {d.spec.model_id for d in services.cluster.deployments()}
    for model_id in current - wanted.keys():
        log.info("model %s left the catalog; stopping its replicas", model_id)
        await services.cluster.undeploy(model_id)
    for model_id in wanted.keys() - current:
        log.info("deploying %s", model_id)
        spec = spec_for(wanted[model_id], services.settings.engine.context_per_slot)
        services.gateway.prompts.prepare(spec)  # its tokenizer loads while the replicas start
        await services.cluster.deploy(spec)


async def _keep_in_sync(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.engine.health_interval_s * 2)
        try:
            await sync_deployments(services)
            await asyncio.to_thread(services.keys.flush_last_used)
            # A gateway that died (its lease expired) leaves holds no request of its own can still settle.
            await asyncio.to_thread(_recover, services, False)
        except Exception:  # noqa: BLE001 - a bad catalog row must not stop the loop that serves the rest
            log.exception("catalog sync failed")


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
    await sync_deployments(services)
    services.cluster.start_supervisor()
    tasks = [asyncio.create_task(_keep_in_sync(services), name="yun-catalog-sync")]
    services.db.start_checkpoints(_CHECKPOINT_EVERY_S)
    # Everything built so far (libraries, app, services) lives for the whole process: move it out of
    # the cyclic collector's reach, so full collections scan only per-request garbage. Without this,
    # gen-2 collections over the start-up heap showed up as tens-of-ms stalls in the latency tail.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await services.cluster.stop()
        await asyncio.to_thread(services.keys.flush_last_used)
        # A clean stop leaves nothing for recovery: what is queued is written, what a request left open
        # is settled at its last progress, and only then does the lease end.
        services.billing.writer.bind_loop(None)
        await asyncio.to_thread(services.billing.settle_own)
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
        await asyncio.to_thread(services.instances.end, services.instance_id)
        services.db.dispose()
