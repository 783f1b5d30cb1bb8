"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints.

A job is its organization's alone: every read is scoped by the org id of the key, so another tenant's id
is not found (404), exactly like an id that never existed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query

from yun.api.bounds import Cursor, Identifier
from yun.api.deps import PrincipalDep, ServicesDep
from yun.api.errors import ERROR_RESPONSES
from yun.api.openai.fine_tuning.protocol import JobCreate, checkpoint_object, event_object, job_object
from yun.api.services import Services
from yun.errors import NotFound
from yun.jobs.fine_tuning.service import JobRequest
from yun.jobs.training.spec import Hyperparameters
from yun.store.fine_tuning import JobRecord, Page
from yun.tenancy import Principal
from yun.tenancy.orgs import INFERENCE_ROLES, require_role

__all__ = ["router"]

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], responses=ERROR_RESPONSES)


def _listed(page: Page[Any], shape: Any) -> dict[str, Any]:
    return {"object": "list", "data": [shape(x) for x in page.data], "has_more": page.has_more}


async def _own(services: Services, principal: Principal, job_id: str, doing: str) -> JobRecord:
    require_role(principal, INFERENCE_ROLES, doing)
    job = await asyncio.to_thread(services.fine_tuning.jobs.get, principal.org_id, job_id)
    if job is None:
        raise NotFound(f"Fine-tuning job '{job_id}' not found.", param="fine_tuning_job_id")
    return job


@router.post("")
async def create_job(body: JobCreate, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Creates a fine-tuning job (LoRA supervised fine-tuning) on a base model from a `fine-tune` file. The
    file is checked and the job's maximum cost held before it is queued."""
    require_role(principal, INFERENCE_ROLES, "create fine-tuning jobs")
    hyper = body.hyper()
    request = JobRequest(
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed,
        hyperparameters=Hyperparameters(
            **{k: v for k, v in hyper.model_dump().items() if v is not None}  # absent: "auto"
        ),
        metadata=body.metadata,
    )
    job = await services.fine_tuning.create(principal.org_id, principal.key_id, request)
    services.poke_jobs()
    return job_object(job)


@router.get("")
async def list_jobs(
    principal: PrincipalDep,
    services: ServicesDep,
    after: Cursor | None = None,
    limit: int = Query(default=20, ge=1, le=100),
) -> dict[str, Any]:
    """The organization's fine-tuning jobs, newest first; page on with `after` (the last id seen)."""
    require_role(principal, INFERENCE_ROLES, "list fine-tuning jobs")
    page = await asyncio.to_thread(services.fine_tuning.jobs.jobs, principal.org_id, after=after, limit=limit)
    return _listed(page, job_object)


@router.get("/{fine_tuning_job_id}")
async def retrieve_job(
    fine_tuning_job_id: Identifier, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    return job_object(await _own(services, principal, fine_tuning_job_id, "read fine-tuning jobs"))


@router.post("/{fine_tuning_job_id}/cancel")
async def cancel_job(fine_tuning_job_id: Identifier, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Cancels a job: a queued one at once; a running one within seconds, paying for the steps it completed."""
    require_role(principal, INFERENCE_ROLES, "cancel fine-tuning jobs")
    job = await services.fine_tuning.cancel(principal.org_id, fine_tuning_job_id)
    services.poke_jobs()
    return job_object(job)


@router.get("/{fine_tuning_job_id}/events")
async def list_events(
    fine_tuning_job_id: Identifier,
    principal: PrincipalDep,
    services: ServicesDep,
    after: Cursor | None = None,
    limit: int = Query(default=20, ge=1, le=1000),
) -> dict[str, Any]:
    """The job's events, newest first: status changes, the loss of each step, validation loss per epoch."""
    require_role(principal, INFERENCE_ROLES, "read fine-tuning jobs")
    repo = services.fine_tuning.jobs
    page = await asyncio.to_thread(repo.events, principal.org_id, fine_tuning_job_id, after=after, limit=limit)
    return _listed(page, event_object)


@router.get("/{fine_tuning_job_id}/checkpoints")
async def list_checkpoints(
    fine_tuning_job_id: Identifier,
    principal: PrincipalDep,
    services: ServicesDep,
    after: Cursor | None = None,
    limit: int = Query(default=10, ge=1, le=100),
) -> dict[str, Any]:
    """The job's checkpoints (one per epoch), newest first."""
    require_role(principal, INFERENCE_ROLES, "read fine-tuning jobs")
    repo = services.fine_tuning.jobs
    page = await asyncio.to_thread(repo.checkpoints, principal.org_id, fine_tuning_job_id, after=after, limit=limit)
    return _listed(page, checkpoint_object)
