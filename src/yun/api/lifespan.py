"""Start-up and shut-down: deploy every catalog model, keep deployments in step with the catalog."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
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
    stale_after = services.settings.engine.request_timeout_s * 2
    while True:
        await asyncio.sleep(services.settings.engine.health_interval_s * 2)
        try:
            await sync_deployments(services)
            await asyncio.to_thread(services.keys.flush_last_used)
            # A gateway that died and never came back leaves holds no request can still settle.
            await asyncio.to_thread(services.billing.recover, stale_after_s=stale_after)
        except Exception:  # noqa: BLE001 - a bad catalog row must not stop the loop that serves the rest
            log.exception("catalog sync failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    # Reservations this gateway left open when it last died are settled before it takes new work.
    await asyncio.to_thread(services.billing.recover)
    # Holds and settlements of an embedded database are group-committed on this loop (see money_path).
    services.db.money_writer.bind_loop(asyncio.get_running_loop())
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
        services.db.dispose()
