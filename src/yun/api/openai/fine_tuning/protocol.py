"""The wire shapes of /v1/fine_tuning/jobs, as OpenAI's clients send and read them.

Every field OpenAI defines is taken or refused by name: a method other than supervised fine-tuning, or
integrations (Weights & Biases), are 400s naming the parameter rather than ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from yun.api.bounds import Identifier, no_nul
from yun.store.fine_tuning import JobCheckpoint, JobEvent, JobRecord

__all__ = ["JobCreate", "checkpoint_object", "event_object", "job_object"]

Auto = Literal["auto"]
FileId = Annotated[str, StringConstraints(min_length=1, max_length=80), AfterValidator(no_nul)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] | None = None
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] | None = None
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] | None = None


class Supervised(_Strict):
    hyperparameters: Hyperparameters | None = None


class Method(_Strict):
    type: Literal["supervised"]
    """Supervised fine-tuning (LoRA); OpenAI's `dpo` and `reinforcement` are not offered."""
    supervised: Supervised | None = None


class JobCreate(_Strict):
    model: Identifier
    training_file: FileId
    validation_file: FileId | None = None
    suffix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")] | None = None
    """Up to 40 letters, digits, `-` and `_`: it becomes part of the fine-tuned model's name."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    hyperparameters: Hyperparameters | None = None
    """OpenAI's older place for them; `method.supervised.hyperparameters` is the newer one."""
    method: Method | None = None
    integrations: list[Any] | None = None
    metadata: (
        dict[Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=512)]] | None
    ) = Field(default=None, max_length=16)

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("integrations (e.g. Weights & Biases) are not offered; send none")
        return value

    def hyper(self) -> Hyperparameters:
        """The hyperparameters, wherever the client put them (both places: the method's win)."""
        method = self.method.supervised if self.method is not None and self.method.supervised else None
        if method is not None and method.hyperparameters is not None:
            return method.hyperparameters
        return self.hyperparameters or Hyperparameters()


def _ts(t: Any) -> int | None:
    return None if t is None else int(t.timestamp())


def job_object(job: JobRecord) -> dict[str, Any]:
    hyper = job.hyperparameters
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model_id,
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.org_id,
        "result_files": [],
        "status": job.status,
        "validation_file": job.validation_file,
        "training_file": job.training_file,
        "hyperparameters": hyper,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "trained_tokens": job.trained_tokens if job.status in ("succeeded", "failed", "cancelled") else None,
        "error": job.error,
        "seed": job.seed,
        "suffix": job.suffix,
        "user_provided_suffix": job.suffix,
        "estimated_finish": None,
        "integrations": [],
        "metadata": job.metadata,
    }


def event_object(e: JobEvent) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": e.id,
        "created_at": _ts(e.created_at),
        "level": e.level,
        "message": e.message,
        "data": e.data or {},
        "type": e.type,
    }


def checkpoint_object(c: JobCheckpoint) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": c.id,
        "created_at": _ts(c.created_at),
        "fine_tuned_model_checkpoint": c.model,
        "fine_tuning_job_id": c.job_id,
        "metrics": c.metrics,
        "step_number": c.step,
    }
