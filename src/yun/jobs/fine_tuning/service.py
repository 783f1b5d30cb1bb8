"""Creating and cancelling fine-tuning jobs: the checks, the hold, the record (the runner does the rest).

Create checks everything before any money moves: the base model (a local chat model Yun serves with
llama.cpp), the organization's files (purpose `fine-tune`), each example against the base model's own
tokenizer, chat template and context (errors name the line), and the hyperparameters. It then holds the
job's maximum cost (the training file's tokens x epochs at the model's training price: QuotaExceeded,
`insufficient_quota`, when the organization cannot cover it) and records the job as queued. The checks run
inside the create call, so a bad file or a short balance is the caller's 400/429 rather than a job that
fails later; the job's events still tell each step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from yun.billing.training import TrainingBilling
from yun.catalog import Catalog, served_context
from yun.catalog.tokenizer import PromptCounter, load_counter
from yun.errors import InvalidRequest, NotFound
from yun.jobs.files import FileStore
from yun.jobs.files.validate import FineTuneCheck, FineTuneReport, TokenCounter, model_token_counter
from yun.jobs.fine_tuning import states
from yun.jobs.training.spec import BASE_LEARNING_RATE, Hyperparameters, resolve_hyperparameters
from yun.store import ModelRecord
from yun.store.deployments import DeploymentRepository
from yun.store.files import FileRepository
from yun.store.fine_tuning import FineTuningRepository, JobRecord

__all__ = ["FineTuningService", "JobRequest"]

log = logging.getLogger("yun.jobs")


@dataclass(frozen=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    hyperparameters: Hyperparameters = Hyperparameters()
    """As the client sent them ("auto" where it did not say)."""
    metadata: dict[str, str] | None = None


class FineTuningService:
    def __init__(
        self,
        jobs: FineTuningRepository,
        catalog: Catalog,
        files: FileStore,
        file_records: FileRepository,
        billing: TrainingBilling,
        context_per_slot: int,
        deployments: DeploymentRepository,
    ) -> None:
        self.jobs = jobs
        self.catalog = catalog
        self.files = files
        self.file_records = file_records
        self.billing = billing
        self.context_per_slot = context_per_slot
        self.deployments = deployments
        self._counters: dict[str, PromptCounter | None] = {}

    # -- create ------------------------------------------------------------------------------------
    async def create(self, org_id: str, key_id: str, req: JobRequest) -> JobRecord:
        base = await asyncio.to_thread(self._base_model, req.model)
        counter = await self._counter(base)
        context = served_context(base, self.context_per_slot) or self.context_per_slot
        report = await self._check(org_id, req.training_file, "training_file", counter, context)
        if req.validation_file is not None:
            await self._check(org_id, req.validation_file, "validation_file", counter, context)
        epochs, batch, learning_rate = resolve_hyperparameters(req.hyperparameters, report.examples)
        hyper = {
            "n_epochs": epochs,
            "batch_size": batch,
            "learning_rate_multiplier": learning_rate / BASE_LEARNING_RATE,
        }
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        planned = report.tokens * epochs
        hold = await asyncio.to_thread(self.billing.reserve, job_id, org_id, key_id, base.id, planned)
        record = JobRecord(
            id=job_id,
            org_id=org_id,
            key_id=key_id,
            model_id=base.id,
            training_file=req.training_file,
            validation_file=req.validation_file,
            suffix=req.suffix,
            seed=req.seed if req.seed is not None else secrets.randbelow(2**31),
            hyperparameters=hyper,
            status=states.QUEUED,
            training_tokens=report.tokens,
            price_version=hold.price_version,
            hold_id=hold.request_id,
            metadata=req.metadata,
        )
        try:
            job = await asyncio.to_thread(self.jobs.create, record)
        except BaseException:
            # No job will ever settle this hold: release it now (nothing was trained, nothing is charged).
            await asyncio.to_thread(self.billing.settle, hold, 0, "error", 0.0, "create")
            raise
        await asyncio.to_thread(self._created_events, job, report)
        return job

    def _base_model(self, model_id: str) -> ModelRecord:
        m = self.catalog.get(model_id)  # ModelNotFound: 404 naming `model`
        if m.kind != "chat" or m.path is None or m.url is not None or m.base_model is not None:
            raise InvalidRequest(
                f"The model '{model_id}' cannot be fine-tuned: fine-tuning takes a chat model Yun serves from its "
                "own GGUF file (not an external model, an embedding model or a fine-tuned one).",
                param="model",
                code="model_not_available",
            )
        return m

    async def _counter(self, m: ModelRecord) -> PromptCounter | None:
        assert m.path is not None
        if m.path not in self._counters:
            self._counters[m.path] = await asyncio.to_thread(load_counter, Path(m.path))
        return self._counters[m.path]

    async def _check(
        self, org_id: str, file_id: str, param: str, counter: PromptCounter | None, context: int
    ) -> FineTuneReport:
        found = await asyncio.to_thread(self.file_records.get, org_id, file_id)
        if found is None:
            raise NotFound(f"File '{file_id}' not found.", param=param)
        if found.purpose != "fine-tune":
            raise InvalidRequest(
                f"File '{file_id}' has purpose '{found.purpose}'; fine-tuning needs a file uploaded with purpose "
                "'fine-tune'.",
                param=param,
                code="invalid_file",
            )
        check = FineTuneCheck(_counter_for(counter), context)
        try:
            async for chunk in await self.files.open(found.storage_key):
                await asyncio.to_thread(check.feed, chunk)  # tokenizing a chunk of examples: off the loop
            check.finish()
        except InvalidRequest as exc:
            raise InvalidRequest(
                str(exc).replace("Invalid file:", f"Invalid {param} '{file_id}':", 1), param=param, code="invalid_file"
            ) from exc
        return FineTuneReport(check.count, check.tokens)

    def _created_events(self, job: JobRecord, report: FineTuneReport) -> None:
        self.jobs.add_event(job.id, f"Created fine-tuning job: {job.id}")
        self.jobs.add_event(job.id, f"Validating training file: {job.training_file}")
        epochs = job.hyperparameters["n_epochs"]
        self.jobs.add_event(
            job.id,
            f"Files validated: {report.examples} examples, {report.tokens:,} tokens per epoch; "
            f"{report.tokens * epochs:,} training tokens held for {epochs} epoch(s). Moving job to queued state.",
            data={"examples": report.examples, "tokens_per_epoch": report.tokens, "n_epochs": epochs},
        )

    # -- the models jobs make ---------------------------------------------------------------------
    def remove_model(self, m: ModelRecord) -> None:
        """Delete a fine-tuned model: gone from the catalog at once (no longer listed or routed), and its
        base's replicas are replaced by ones that do not load its adapter (blocking: off the loop)."""
        self.catalog.remove(m.id)
        if m.base_model is not None:
            self.deployments.roll(m.base_model)

    # -- cancel ------------------------------------------------------------------------------------
    async def cancel(self, org_id: str, job_id: str) -> JobRecord:
        """Cancel the organization's job. A queued job is cancelled at once (nothing ran: nothing is
        charged); a running one is stopped by its runner within seconds and pays for the steps it
        completed (until then it shows `running`)."""
        job = await asyncio.to_thread(self.jobs.request_cancel, org_id, job_id)
        if job is None:
            raise NotFound(f"Fine-tuning job '{job_id}' not found.", param="fine_tuning_job_id")
        if job.status in states.FINAL and job.status != states.CANCELLED:
            raise InvalidRequest(
                f"Fine-tuning job '{job_id}' has already {job.status}; it cannot be cancelled.",
                param="fine_tuning_job_id",
            )
        if job.status in (states.VALIDATING, states.QUEUED):
            moved = await asyncio.to_thread(
                self.jobs.transition,
                job_id,
                states.CANCELLED,
                from_=(states.VALIDATING, states.QUEUED),
                finished_at=_now(),
            )
            if moved is not None:
                await asyncio.to_thread(self._settle_unrun, moved)
                return moved
        return await asyncio.to_thread(self.jobs.get_any, job_id)

    def _settle_unrun(self, job: JobRecord) -> None:
        hold = self.billing.hold_of(job.id)
        if hold is not None:
            self.billing.settle(hold, 0, "cancelled", 0.0, "api")
        self.jobs.add_event(job.id, "Fine-tuning job cancelled before it ran: nothing was trained or charged.")


def _counter_for(counter: PromptCounter | None) -> TokenCounter:
    """Tokens of one example as the model sees it; without a tokenizer here, one per UTF-8 byte (a bound)."""
    if counter is not None:
        return model_token_counter(counter)
    return lambda messages: len(json.dumps(messages, ensure_ascii=False).encode())


def _now() -> datetime:
    return datetime.now(UTC)
