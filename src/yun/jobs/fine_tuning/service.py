"""Creating, validating and cancelling fine-tuning jobs: the checks, the hold, the record (the runner does
the rest).

Create does only the checks that read no file, inside the call (a 4xx to the caller): the base model (a
local chat model Yun serves with llama.cpp), the organization's files (they exist, are its own, purpose
`fine-tune`) and the hyperparameters (the wire model's bounds). It records the job in `validating_files`
and returns at once, however large the file.

The jobs worker (the runner, in the active controller) then `validate`s it: each example against the base
model's own tokenizer, chat template and context (errors name the line), the "auto" hyperparameters
resolved for the file, and the job's maximum cost held (the training file's tokens x epochs at the model's
training price). The hold is taken there, not at create, because its size needs the file's tokens: an
organization that cannot cover it sees the job fail with `insufficient_quota` (its error), as a bad file
fails it with `invalid_file`. Either way the job moves to queued or failed, and its events say why.

Restart-safe: a job left in validating_files (Yun crashed mid-validation) is validated again by the next
runner; a hold it already took is found (by the job: `hold_of`) and kept, never taken twice. A job
cancelled during validation is cancelled at once; the validation then ending finds it cancelled and
releases any hold it took.
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
from typing import Any

from yun.billing.training import TrainingBilling
from yun.catalog import Catalog, served_context
from yun.catalog.tokenizer import PromptCounter, load_counter
from yun.errors import InvalidRequest, NotFound, QuotaExceeded, YunError
from yun.jobs.files import FileStore
from yun.jobs.files.validate import FineTuneCheck, FineTuneReport, TokenCounter, model_token_counter
from yun.jobs.fine_tuning import states
from yun.jobs.training.spec import BASE_LEARNING_RATE, Hyperparameters, resolve_hyperparameters
from yun.store import ModelRecord
from yun.store.deployments import DeploymentRepository
from yun.store.files import FileRepository, StoredFile
from yun.store.fine_tuning import FineTuningRepository, JobRecord
from yun.store.money import HoldRecord

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
        """Check what needs no file read and record the job in validating_files (the runner validates it)."""
        base = await asyncio.to_thread(self._base_model, req.model)
        await asyncio.to_thread(self._file, org_id, req.training_file, "training_file")
        if req.validation_file is not None:
            await asyncio.to_thread(self._file, org_id, req.validation_file, "validation_file")
        record = JobRecord(
            id=f"ftjob-{uuid.uuid4().hex[:24]}",
            org_id=org_id,
            key_id=key_id,
            model_id=base.id,
            training_file=req.training_file,
            validation_file=req.validation_file,
            suffix=req.suffix,
            seed=req.seed if req.seed is not None else secrets.randbelow(2**31),
            hyperparameters=req.hyperparameters.model_dump(),  # "auto" until validation resolves them
            status=states.VALIDATING,
            metadata=req.metadata,
        )
        job = await asyncio.to_thread(self.jobs.create, record)
        await asyncio.to_thread(self._created_events, job)
        return job

    # -- validate (the jobs worker) ----------------------------------------------------------------
    async def validate(self, job: JobRecord) -> JobRecord | None:
        """Validate a job in validating_files: its files, read in full; its hyperparameters resolved; its
        maximum cost held. Moves it to queued, or to failed with the OpenAI-shaped error (the line, or
        `insufficient_quota`). Returns the job as moved, or None if it had left validating_files meanwhile
        (cancelled: any hold taken here is released)."""
        try:
            report, hyper = await self._validate_files(job)
            if (await asyncio.to_thread(self.jobs.get_any, job.id)).status != states.VALIDATING:
                return None  # cancelled while its files were read: hold nothing
            hold = await asyncio.to_thread(self._hold, job, report.tokens * int(hyper["n_epochs"]))
        except (InvalidRequest, NotFound, QuotaExceeded) as exc:
            return await self._fail_validation(job, exc)
        moved = await asyncio.to_thread(
            self.jobs.transition,
            job.id,
            states.QUEUED,
            from_=(states.VALIDATING,),
            hyperparameters=hyper,
            training_tokens=report.tokens,
            price_version=hold.price_version,
            hold_id=hold.request_id,
        )
        if moved is None:
            # Cancelled while it was validated: nothing ran, nothing is charged. (Moved on by another
            # validation of the same job, which found this same hold: that job's hold, left alone.)
            if (await asyncio.to_thread(self.jobs.get_any, job.id)).status in states.FINAL:
                await asyncio.to_thread(self.billing.settle, hold, 0, "cancelled", 0.0, "validation")
            return None
        await asyncio.to_thread(self._validated_events, moved, report)
        return moved

    async def _validate_files(self, job: JobRecord) -> tuple[FineTuneReport, dict[str, Any]]:
        base = await asyncio.to_thread(self._base_model, job.model_id)
        counter = await self._counter(base)
        context = served_context(base, self.context_per_slot) or self.context_per_slot
        report = await self._check(job.org_id, job.training_file, "training_file", counter, context)
        if job.validation_file is not None:
            await asyncio.to_thread(self.jobs.add_event, job.id, f"Validating validation file: {job.validation_file}")
            await self._check(job.org_id, job.validation_file, "validation_file", counter, context)
        asked = Hyperparameters.model_validate(job.hyperparameters)
        epochs, batch, learning_rate = resolve_hyperparameters(asked, report.examples)
        hyper = {
            "n_epochs": epochs,
            "batch_size": batch,
            "learning_rate_multiplier": learning_rate / BASE_LEARNING_RATE,
        }
        return report, hyper

    def _hold(self, job: JobRecord, tokens: int) -> HoldRecord:
        """The job's hold: the one a validation cut short by a crash already took, else a new one."""
        return self.billing.hold_of(job.id) or self.billing.reserve(
            job.id, job.org_id, job.key_id, job.model_id, tokens
        )

    async def _fail_validation(self, job: JobRecord, exc: YunError) -> JobRecord | None:
        error = {"code": exc.code or "invalid_file", "message": exc.message, "param": exc.param}
        moved = await asyncio.to_thread(
            self.jobs.transition, job.id, states.FAILED, from_=(states.VALIDATING,), error=error, finished_at=_now()
        )
        if moved is None:
            return None
        hold = await asyncio.to_thread(self.billing.hold_of, job.id)
        if hold is not None:  # taken before a crash, by a validation that then failed: nothing ran
            await asyncio.to_thread(self.billing.settle, hold, 0, "failed", 0.0, "validation")
        await asyncio.to_thread(self.jobs.add_event, job.id, f"Validation failed: {exc}", level="error")
        return moved

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

    def _file(self, org_id: str, file_id: str, param: str) -> StoredFile:
        """The organization's file for `param`: it exists, is its own, and was uploaded for fine-tuning."""
        found = self.file_records.get(org_id, file_id)
        if found is None:
            raise NotFound(f"File '{file_id}' not found.", param=param)
        if found.purpose != "fine-tune":
            raise InvalidRequest(
                f"File '{file_id}' has purpose '{found.purpose}'; fine-tuning needs a file uploaded with purpose "
                "'fine-tune'.",
                param=param,
                code="invalid_file",
            )
        return found

    async def _check(
        self, org_id: str, file_id: str, param: str, counter: PromptCounter | None, context: int
    ) -> FineTuneReport:
        found = await asyncio.to_thread(self._file, org_id, file_id, param)  # deleted since create: failed
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

    def _created_events(self, job: JobRecord) -> None:
        self.jobs.add_event(job.id, f"Created fine-tuning job: {job.id}")
        self.jobs.add_event(job.id, f"Validating training file: {job.training_file}")

    def _validated_events(self, job: JobRecord, report: FineTuneReport) -> None:
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
