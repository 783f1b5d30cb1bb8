"""Admin API: deployments, the records the controller makes true (which model, how many replicas of what
shape, shared or dedicated to one organization), and the replicas it made for each, from the registry.

Writing a deployment starts nothing here: the active controller (told at once when it runs in this process)
places or stops replicas. A dedicated deployment's first billing interval is held before its record is
written (create, or a scale that adds replicas): an owner that cannot cover it gets a 402
`insufficient_quota` and the controller never sees the replicas (billing/compute.py `hold_ahead`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query

from yun.api.admin.deps import DeploymentsDep
from yun.api.admin.protocol import (
    DeploymentDetail,
    DeploymentIn,
    DeploymentList,
    DeploymentOut,
    DeploymentUpdate,
    ReplicaOut,
    ScaleIn,
)
from yun.api.bounds import Identifier
from yun.api.deps import AdminDep, ServicesDep
from yun.api.services import Services
from yun.cluster.base import Resources
from yun.errors import InvalidRequest, NotFound
from yun.store import DeploymentRecord, DeploymentRepository, ReplicaRecord
from yun.store.deployments import default_resources, new_deployment_id, replica_bounds

__all__ = ["router"]

router = APIRouter()

# Fields of a deployment that are never null: a create that leaves one out takes the store's default.
_NEVER_NULL = ("engine", "cpus", "gpus", "memory_mb")


def _out(d: DeploymentRecord, ready: int) -> dict[str, Any]:
    return {
        "id": d.id,
        "model": d.model_id,
        "engine": d.engine,
        "owner": d.owner_org,
        "min": d.min_replicas,
        "max": d.max_replicas,
        "desired": d.desired_replicas,
        "ready": ready,
        "cpus": d.cpus,
        "gpus": d.gpus,
        "memory_mb": d.memory_mb,
        "shape": Resources(d.cpus, d.gpus, d.memory_mb).shape,
        "threads": d.threads,
        "parallel": d.parallel,
        "context": d.context,
        "command": None if d.command is None else list(d.command),
        "idle_timeout_s": d.idle_timeout_s,
        "autoscale": d.autoscale,
        "generation": d.generation,
        "state": d.state,
        "message": d.message,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }


def _fields(given: dict[str, Any]) -> dict[str, Any]:
    """A deployment's fields as the store takes them: an autoscaling policy holds only what was set."""
    if given.get("autoscale") is not None:
        given["autoscale"] = {k: v for k, v in given["autoscale"].items() if v is not None}
    return given


def _replica_out(r: ReplicaRecord) -> ReplicaOut:
    return ReplicaOut(
        id=r.id,
        state=r.state,
        generation=r.generation,
        node=r.node,
        endpoint=r.endpoint,
        backend=r.backend,
        shape=r.shape,
        restarts=r.restarts,
        error=r.error,
        created_at=r.created_at,
        ready_at=r.ready_at,
    )


def _summary(repo: DeploymentRepository, d: DeploymentRecord) -> DeploymentOut:
    return DeploymentOut(**_out(d, repo.ready_counts([d.id]).get(d.id, 0)))


def _detail(repo: DeploymentRepository, deployment_id: str) -> DeploymentDetail:
    d = repo.get(deployment_id)
    if d is None:
        raise NotFound(f"no deployment {deployment_id!r}", param="deployment_id")
    replicas = repo.replicas(d.id)
    ready = sum(r.state == "ready" for r in replicas)
    return DeploymentDetail(**_out(d, ready), replicas=[_replica_out(r) for r in replicas])


def _changed(services: Services, answer: DeploymentOut) -> DeploymentOut:
    """Have this process's controller (if it runs one) act on a change now rather than at its next pass;
    another process's controller sees it at its next pass, within a second or so."""
    if services.controller is not None:
        services.controller.poke()
    return answer


def _owner_id(services: Services, ref: str) -> str:
    try:
        return services.org_service.resolve(ref).id
    except NotFound as exc:
        raise NotFound(exc.message, param="owner") from exc


@router.post("/deployments", status_code=201)
async def create_deployment(
    body: DeploymentIn, _: AdminDep, services: ServicesDep, repo: DeploymentsDep
) -> DeploymentOut:
    """Deploy a local model of the catalog; the controller starts its replicas."""

    def create() -> DeploymentOut:
        model = services.catalog.get(body.model)  # 404 for a model that is not in the catalog
        if model.source == "external":
            raise InvalidRequest(
                f"'{model.id}' is served by an external server; only models Yun runs itself can be deployed",
                param="model",
            )
        given = _fields(body.model_dump(exclude={"model", "id", "owner", "replicas", "min", "max"}))
        owner = None if body.owner is None else _owner_id(services, body.owner)
        deployment_id = body.id or new_deployment_id()
        _, desired, _ = replica_bounds(body.replicas, body.min, body.max)
        cpus, gpus, memory_mb = default_resources()
        shape = Resources(
            cpus if body.cpus is None else body.cpus,
            gpus if body.gpus is None else body.gpus,
            memory_mb if body.memory_mb is None else body.memory_mb,
        )
        hold = services.compute.hold_ahead(deployment_id, owner, model.id, shape, desired)  # 402: nothing made
        try:
            d = repo.create(
                model.id,
                deployment_id=deployment_id,
                owner_org=owner,
                replicas=body.replicas,
                min_replicas=body.min,
                max_replicas=body.max,
                **{k: v for k, v in given.items() if v is not None or k not in _NEVER_NULL},
            )
        except BaseException:
            if hold is not None:  # no deployment runs on it (a bad id, one that exists): nothing is charged
                services.compute.release(hold, deployment_id)
            raise
        return DeploymentOut(**_out(d, 0))

    return _changed(services, await asyncio.to_thread(create))


@router.get("/deployments")
async def list_deployments(
    _: AdminDep,
    services: ServicesDep,
    repo: DeploymentsDep,
    model: Annotated[Identifier | None, Query(description="Only deployments of this model")] = None,
    owner: Annotated[Identifier | None, Query(description="Only those dedicated to this org (id or name)")] = None,
) -> DeploymentList:
    def listing() -> DeploymentList:
        owner_id = None if owner is None else _owner_id(services, owner)
        found = repo.list(model_id=model, owner_org=owner_id)
        if not found and model is not None:
            services.catalog.get(model)  # an unknown model is a 404, not an empty list
        ready = repo.ready_counts([d.id for d in found])
        return DeploymentList(data=[DeploymentOut(**_out(d, ready.get(d.id, 0))) for d in found])

    return await asyncio.to_thread(listing)


@router.get("/deployments/{deployment_id}")
async def get_deployment(deployment_id: Identifier, _: AdminDep, repo: DeploymentsDep) -> DeploymentDetail:
    """A deployment with its replicas: where each runs, its state, restarts and last error."""
    return await asyncio.to_thread(_detail, repo, deployment_id)


@router.post("/deployments/{deployment_id}/scale")
async def scale_deployment(
    deployment_id: Identifier, body: ScaleIn, _: AdminDep, services: ServicesDep, repo: DeploymentsDep
) -> DeploymentOut:
    """Set the desired replica count (within min..max), or min and max (which clamp the count)."""

    def scale() -> DeploymentOut:
        before = repo.get(deployment_id)
        if before is None:
            raise NotFound(f"no deployment {deployment_id!r}")
        lo = before.min_replicas if body.min is None else body.min
        hi = before.max_replicas if body.max is None else body.max
        after = body.replicas if body.replicas is not None else min(max(before.desired_replicas, lo), hi)
        shape = Resources(before.cpus, before.gpus, before.memory_mb)
        added = after - before.desired_replicas
        hold = services.compute.hold_ahead(before.id, before.owner_org, before.model_id, shape, added)
        try:
            d = repo.scale(deployment_id, body.replicas, min_replicas=body.min, max_replicas=body.max)
        except BaseException:
            if hold is not None:
                services.compute.release(hold, deployment_id)
            raise
        return _summary(repo, d)

    return _changed(services, await asyncio.to_thread(scale))


@router.patch("/deployments/{deployment_id}")
async def update_deployment(
    deployment_id: Identifier, body: DeploymentUpdate, _: AdminDep, services: ServicesDep, repo: DeploymentsDep
) -> DeploymentOut:
    """Change the engine, its arguments or the resources per replica: a new generation, rolled out by the
    controller (new replicas ready before old ones drain). The autoscaling policy and the idle timeout
    change without one."""

    def update() -> DeploymentOut:
        return _summary(repo, repo.update(deployment_id, **_fields(body.model_dump(exclude_unset=True))))

    return _changed(services, await asyncio.to_thread(update))


@router.delete("/deployments/{deployment_id}", status_code=202)
async def delete_deployment(
    deployment_id: Identifier, _: AdminDep, services: ServicesDep, repo: DeploymentsDep
) -> DeploymentOut:
    """Mark a deployment for deletion (state `deleting`): the controller stops its replicas, then removes
    it, and `GET` answers 404 from then on. Only the controller removes it: it alone knows whether a
    replica is being placed right now, which would otherwise outlive its deployment. A model whose last
    deployment goes stays in the catalog, undeployed, until a deployment is created for it."""

    def mark() -> DeploymentOut:
        d = repo.get(deployment_id)
        if d is None:
            raise NotFound(f"no deployment {deployment_id!r}")
        others = [o for o in repo.list(model_id=d.model_id) if o.id != d.id and o.state != "deleting"]
        if not others:
            with contextlib.suppress(NotFound):  # a model already gone from the catalog
                services.catalog.undeploy(d.model_id)
        return _summary(repo, repo.mark_deleting(deployment_id))

    return _changed(services, await asyncio.to_thread(mark))
