"""The control plane wired to the catalog: what the controller is asked to run, and what gateways route to.

- The controller (roles `all` and `controller`) reads deployments through `DeploymentRecords` and the
  catalog through `_model_source`; every local model of the catalog gets a shared deployment when it has
  none (the path a new model and an upgraded installation both take).
- Every gateway (roles `all` and `gateway`) keeps its `Router` in step with the catalog, the deployments
  and the replica registry: `refresh` rebuilds the routes whenever one of them moved, polled a few
  times a second (so a gateway on another machine sees a change within a second) and at once when the
  controller in this process changed something.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from yun.api.services import Services
from yun.catalog import served_context
from yun.cluster import ReplicaSpec, Route
from yun.cluster.autoscale import Policy
from yun.cluster.backends.supervised import RestartPolicy
from yun.cluster.base import Cluster, EngineArgs, Resources
from yun.cluster.controller import Wanted
from yun.errors import InvalidRequest, ModelNotFound, NotFound
from yun.settings import Settings
from yun.store import ModelRecord
from yun.store.deployments import DeploymentRepository
from yun.store.records import DeploymentRecord
from yun.store.replicas import RegistryEntry

__all__ = [
    "DeploymentRecords",
    "ensure_default_deployments",
    "make_backend",
    "model_source",
    "refresh_routes",
    "routes",
    "spec_for",
]

log = logging.getLogger("yun")

_EMBEDDING_SLOTS = 2


def spec_for(m: ModelRecord, context_per_slot: int, context: int | None = None) -> ReplicaSpec:
    """What a model serves: the catalog's facts, with the context a deployment runs it at (if it says)."""
    kind: Literal["chat", "embedding"] = "embedding" if m.kind == "embedding" else "chat"
    dims = m.card.get("dimensions") or (m.card.get("embedding_length") if kind == "embedding" else None)
    served = served_context(m, context_per_slot)
    if context is not None and kind == "chat":
        served = context if served is None else min(served, context)
    return ReplicaSpec(
        model_id=m.id,
        kind=kind,
        path=m.path,
        url=m.url,
        api_key=m.upstream_key,
        upstream_model=m.upstream_model,
        replicas=m.replicas,
        dimensions=dims if m.source != "external" else None,
        context_length=served,
    )


class DeploymentRecords:
    """The controller's view of the deployments table (`yun.cluster.controller.DeploymentStore`)."""

    def __init__(self, services: Services) -> None:
        self._repo: DeploymentRepository = services.deployments
        self._catalog = services.catalog
        self._engine = services.settings.engine
        self._compute = services.compute

    def wanted(self) -> Sequence[Wanted]:
        e = self._engine
        out = []
        adapters = fine_tune_adapters(self._catalog.list())
        for d in self._repo.list():
            engine: Literal["llamacpp", "vllm"] = "vllm" if d.engine == "vllm" else "llamacpp"
            parallel = d.parallel or e.parallel
            out.append(
                Wanted(
                    id=d.id,
                    model_id=d.model_id,
                    desired=d.desired_replicas,
                    generation=d.generation,
                    engine=engine,
                    resources=Resources(cpus=d.cpus, gpus=d.gpus, memory_mb=d.memory_mb),
                    args=EngineArgs(
                        threads=d.threads or e.threads,
                        parallel=parallel,
                        context=d.context or e.context_per_slot,
                        lora=adapters.get(d.model_id, ()) if engine == "llamacpp" else (),
                    ),
                    command=tuple(d.command) if d.command else None,
                    deleting=d.state == "deleting",
                    min_replicas=d.min_replicas,
                    max_replicas=d.max_replicas,
                    autoscale=_policy(d, parallel),
                    idle_timeout_s=d.idle_timeout_s,
                    blocked=bool(d.message),
                )
            )
        return out

    def scale(self, deployment_id: str, desired: int, *, was: int) -> bool:
        """The autoscaler's move from `was` to `desired` replicas. Up, a dedicated deployment first holds
        the next billing interval of the replicas it adds, as the admin API's scale does: its owner pays for
        no replica unheld, and one that cannot cover them gets PaymentRequired (the autoscaler leaves the
        deployment as it is and tries again on a later pass). A hold nothing follows is let go."""
        hold = None
        if desired > was:
            d = self._repo.get(deployment_id)
            if d is None:
                raise NotFound(f"no deployment {deployment_id!r}")
            shape = Resources(cpus=d.cpus, gpus=d.gpus, memory_mb=d.memory_mb)
            hold = self._compute.hold_ahead(d.id, d.owner_org, d.model_id, shape, desired - was)
        try:
            moved = self._repo.scale(deployment_id, desired, if_desired=was).desired_replicas == desired
        except BaseException:
            if hold is not None:
                self._compute.release(hold, deployment_id)
            raise
        if not moved and hold is not None:
            self._compute.release(hold, deployment_id)
        return moved

    def set_message(self, deployment_id: str, message: str) -> None:
        self._repo.set_message(deployment_id, message)

    def remove(self, deployment_id: str) -> None:
        self._repo.delete(deployment_id)


def fine_tune_adapters(models: Sequence[ModelRecord]) -> dict[str, tuple[str, ...]]:
    """Per base model, the LoRA adapters of its fine-tunes, oldest first: what its replicas load."""
    out: dict[str, list[str]] = {}
    for m in models:
        if m.base_model is not None and m.adapter is not None:
            out.setdefault(m.base_model, []).append(m.adapter)
    return {base: tuple(paths) for base, paths in out.items()}


def _policy(d: DeploymentRecord, slots: int) -> Policy | None:
    """The deployment's autoscaling policy; none (logged) for one the admin API would have refused."""
    try:
        return Policy.parse(d.autoscale, slots)
    except ValueError as exc:
        log.warning("deployment %s: autoscale policy %r ignored: %s", d.id, d.autoscale, exc)
        return None


def make_backend(settings: Settings) -> Cluster:
    """The `Cluster` backend `--cluster` names: `local`, or a Ray cluster (`ray://HOST:PORT`, `auto`)."""
    target = settings.cluster.backend
    policy = RestartPolicy(hung_after_s=settings.engine.hung_after_s)
    if target == "local":
        from yun.cluster.backends.local import LocalBackend

        return LocalBackend(settings.data_dir / "logs", policy=policy)
    from yun.cluster.backends.ray import RayBackend

    address = target.removeprefix("ray://")
    return RayBackend(address, policy=policy)


def model_source(services: Services, model_id: str) -> tuple[str, Literal["chat", "embedding"]] | None:
    try:
        m = services.catalog.get(model_id)
    except ModelNotFound:
        return None
    if m.path is None or m.url is not None:
        return None
    return m.path, "embedding" if m.kind == "embedding" else "chat"


def ensure_default_deployments(services: Services) -> None:
    """Every local model of the catalog is deployed: one with no deployment at all gets a shared one with
    the replica count the catalog gives it, unless that is 0 (its last deployment was deleted)."""
    deployments = services.deployments.list()
    have = {d.model_id for d in deployments}
    models = services.catalog.list()
    for m in models:
        if m.url is None and m.path is not None and m.base_model is None and m.id not in have and m.replicas > 0:
            n = m.replicas
            try:  # named after its model when the name makes a deployment id
                d = services.deployments.create(m.id, deployment_id=m.id, min_replicas=n, max_replicas=n, replicas=n)
            except InvalidRequest:
                d = services.deployments.create(m.id, min_replicas=n, max_replicas=n, replicas=n)
            log.info("deployment %s created for the catalog's model %s", d.id, m.id)
    # A model removed from the catalog takes its deployments with it.
    local = {m.id for m in models if m.url is None}
    for d in deployments:
        if d.model_id not in local and d.state != "deleting":
            services.deployments.mark_deleting(d.id)
            log.info("deployment %s goes: its model %s left the catalog", d.id, d.model_id)


def routes(
    models: Sequence[ModelRecord],
    deployments: Sequence[DeploymentRecord],
    entries: Sequence[RegistryEntry],
    services: Services,
) -> list[Route]:
    e = services.settings.engine
    by_id = {m.id: m for m in models}
    of: dict[str, list[RegistryEntry]] = {}
    for entry in entries:
        of.setdefault(entry.deployment_id, []).append(entry)
    out = [Route(m.id, spec_for(m, e.context_per_slot)) for m in models if m.url is not None]
    for d in deployments:
        m = by_id.get(d.model_id)
        if m is None or m.url is not None or d.state == "deleting":
            continue
        spec = spec_for(m, e.context_per_slot, d.context)
        slots = _EMBEDDING_SLOTS if spec.kind == "embedding" else (d.parallel or e.parallel)
        route = Route(
            d.id,
            spec,
            owner_org=d.owner_org,
            entries=tuple(of.get(d.id, ())),
            slots=slots,
            llamacpp=d.engine != "vllm",
            desired=d.desired_replicas,
            wakes=bool(d.autoscale) or d.idle_timeout_s is not None,
            failure=d.message.split("\n", 1)[0][:300],
        )
        out.append(route)
        if route.llamacpp and spec.kind == "chat":
            out += _fine_tune_routes(route, d, [f for f in models if f.base_model == m.id], e.context_per_slot)
    return out


def _fine_tune_routes(
    base: Route, d: DeploymentRecord, fine_tunes: Sequence[ModelRecord], context_per_slot: int
) -> list[Route]:
    """A fine-tuned model is served by its base's deployment: on the replicas that loaded its adapter (a
    replica started before the fine-tune was made has not; the controller is replacing it), for its
    organization only, from the shared deployment or its own dedicated one."""
    out = []
    for f in fine_tunes:
        if f.adapter is None or (d.owner_org is not None and d.owner_org != f.owner_org):
            continue
        entries = tuple(e for e in base.entries if f.adapter in e.adapters)
        out.append(
            replace(
                base,
                deployment_id=f"{d.id}/{f.id}",
                spec=spec_for(f, context_per_slot, d.context),
                owner_org=f.owner_org,
                entries=entries,
                adapter=f.adapter,
                load_id=d.id,
            )
        )
    return out


async def refresh_routes(services: Services) -> None:
    """Rebuild this gateway's routes from the catalog, the deployments and the registry."""
    models, deployments, entries = await asyncio.to_thread(
        lambda: (services.catalog.list(), services.deployments.list(), services.registry.live())
    )
    built = routes(models, deployments, entries, services)
    for route in built:
        services.gateway.prompts.prepare(route.spec)  # a new model's tokenizer loads in the background
    services.router.apply(built)
    await services.router.check_external(new_only=True)
