"""The fine-tuning runner: queued jobs become trainer processes placed through the `Cluster` seam, and
what the trainer reports becomes the job's events, checkpoints, state, bill and model.

It runs in the active controller's process (one per database), one pass per second or when poked:

1. Open job holds whose job is over (or was never recorded) are settled: what a crash between a job's end
   and its settlement left (exactly once: a settled hold is never settled again).
2. Each running job: the trainer's new events (its run's `events-<run>.jsonl`, read from the offset
   recorded on the job, so a restarted runner records none twice) become job events, checkpoints and trained tokens; a
   cancel request stops the trainer (SIGTERM: it stops within a step); a trainer that ended is the job's
   end (done: the fine-tuned model is registered, then the job succeeds; cancelled; error: failed), and one
   that vanished (Yun was killed: local tasks die with their controller) is queued again to resume from
   its last checkpoint, at most MAX_ATTEMPTS runs in all. Each checkpoint the trainer writes is copied
   back into the FileStore (checkpoints.py), and a run started again gets the newest one in its working
   directory: it resumes from it on any node, even when the node that wrote it is gone.
3. Queued jobs start while fewer than `max_running` run (the rest wait: compute is busy).

Every end settles the job's hold with the tokens its completed steps trained on (a cancelled or failed
job pays for what ran). Every run's end (the job's end, or a trainer that vanished and is run again)
records the compute the run held, from its start to its end, once per run (billing/training.py
`record_run`): the job's compute-seconds are the sum of its runs, never a run twice. A run that vanished
(Yun was killed with it, its node was lost) is taken to have ended at its last sign of life, the time of
the last event its trainer wrote (it writes one every step), not when the runner noticed: the time Yun
was down is not compute the trainer used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from yun.billing.training import TrainingRun
from yun.cluster.backends.tasks import read_from
from yun.cluster.base import Cluster, Resources, TaskOrder
from yun.errors import ComputeBusy, EngineUnavailable, NotFound, YunError
from yun.jobs.fine_tuning import states
from yun.jobs.fine_tuning.checkpoints import CheckpointStore
from yun.jobs.fine_tuning.service import FineTuningService
from yun.jobs.training.spec import BASE_LEARNING_RATE
from yun.store.fine_tuning import JobRecord

__all__ = ["FineTuningRunner", "RunnerConfig", "fine_tuned_name"]

log = logging.getLogger("yun.jobs")

SPEC = "spec.json"


def events_file(attempt: int) -> str:
    """The event log of a job's run number `attempt`. One per run, each read from its start: a run started
    again on another node (or in a fresh directory) writes a new log, which an offset into the previous
    run's log would skip or misread."""
    return f"events-{attempt}.jsonl"


def fine_tuned_name(job: JobRecord) -> str:
    """OpenAI's form: `ft:<base>:<org>:<suffix>:<job id>` (an empty suffix stays empty)."""
    return f"ft:{job.model_id}:{job.org_id}:{job.suffix or ''}:{job.id}"


@dataclass(frozen=True)
class RunnerConfig:
    work_dir: Path
    """One directory per job (inputs, spec, the trainer's events, checkpoints, log)."""
    adapters_dir: Path
    """Where a finished job's adapter is kept for serving."""
    max_running: int = 1
    threads: int = 2
    interval_s: float = 1.0
    owner: str = "runner"
    """Who runs the jobs (this controller's instance id), written on each running job."""
    command: tuple[str, ...] | None = None
    """Replaces the trainer's command; `{spec}` and `{events}` are substituted (settings.jobs.trainer_command)."""
    options: tuple[tuple[str, Any], ...] = ()
    """Recipe settings added to every spec (settings.jobs.trainer_options)."""

    def trainer(self, events: str) -> tuple[str, ...]:
        """The trainer's command, writing its events to `events`; it runs in the task's working directory,
        where its spec and events are."""
        spec = SPEC
        if self.command is None:
            return (sys.executable, "-m", "yun.jobs.training", "--spec", spec, "--events", events)
        return tuple(a.replace("{spec}", spec).replace("{events}", events) for a in self.command)


class FineTuningRunner:
    def __init__(self, service: FineTuningService, cluster: Cluster, config: RunnerConfig) -> None:
        self.service = service
        self.jobs = service.jobs
        self.cluster = cluster
        self.config = config
        self._wake = asyncio.Event()
        self._stopping: set[str] = set()
        self._epochs: dict[str, dict[str, Any]] = {}  # job id -> its last epoch's losses (for its checkpoint)
        self._waiting: set[str] = set()  # queued jobs told they wait for compute (told once)
        self._validations: dict[str, asyncio.Task[None]] = {}  # job id -> its validation in flight
        self.checkpoints = CheckpointStore(service.files)

    def poke(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await self.run_once()
                except Exception:  # noqa: BLE001 - one bad pass must not stop the jobs of everyone else
                    log.exception("fine-tuning runner pass failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.interval_s)
                self._wake.clear()
        finally:
            # Stopped (shutdown, or no longer the controller): validations in flight stop too; their jobs
            # stay in validating_files and the next runner validates them again.
            for task in list(self._validations.values()):
                task.cancel()

    async def run_once(self) -> None:
        # One thread hop and one query when there is nothing to do (every second, beside the requests the
        # gateway in this process serves: each hop and ORM query costs them a little latency).
        active = await asyncio.to_thread(self._active_jobs)
        for job in active:
            if job.status == states.VALIDATING and job.id not in self._validations:
                # Each in its own task: a large file holds up nobody else.
                task = asyncio.get_running_loop().create_task(self._validate(job), name=f"yun-validate-{job.id}")
                self._validations[job.id] = task
        running = [job for job in active if job.status == states.RUNNING]
        for job in running:
            await self._follow(job)
        queued = [job for job in active if job.status == states.QUEUED]
        if not queued:
            return
        busy = len(await asyncio.to_thread(self.jobs.in_status, (states.RUNNING,))) if running else 0
        for job in queued:
            if job.cancel_requested:
                await self.service.cancel(job.org_id, job.id)
            elif busy < self.config.max_running:
                await self._start(job)
                busy += 1

    async def _validate(self, job: JobRecord) -> None:
        """Validate a job just created (or left in validating_files by a crash: validated again)."""
        try:
            if await self.service.validate(job) is not None:
                self.poke()  # queued: it may start now
        except Exception:  # noqa: BLE001 - storage or database trouble: the next pass validates it again
            log.exception("validating fine-tuning job %s failed; retried on the next pass", job.id)
        finally:
            self._validations.pop(job.id, None)

    # -- starting ------------------------------------------------------------------------------------
    def _dir(self, job: JobRecord) -> Path:
        return self.config.work_dir / job.id

    def _resources(self) -> Resources:
        return Resources(cpus=float(self.config.threads))

    async def _start(self, job: JobRecord) -> None:
        now = _now()
        moved = await asyncio.to_thread(
            self.jobs.transition,
            job.id,
            states.RUNNING,
            from_=states.may_move(states.RUNNING),
            attempts=job.attempts + 1,
            runner=self.config.owner,
            started_at=job.started_at or now,
            run_started_at=now,
            run_seen_at=None,
            progress_offset=0,  # its own event log, read from the start
        )
        if moved is None:
            return
        workdir = self._dir(job)
        try:
            inputs = await self._prepare(moved, workdir)
            env = (("OMP_NUM_THREADS", str(self.config.threads)),)
            command = self.config.trainer(events_file(moved.attempts))
            order = TaskOrder(job.id, command, str(workdir), self._resources(), env, inputs)
            await self.cluster.start_task(order)
        except ComputeBusy as exc:  # no node has its resources free now: it waits in the queue
            await asyncio.to_thread(
                self.jobs.transition,
                job.id,
                states.QUEUED,
                from_=(states.RUNNING,),
                runner=None,
                attempts=job.attempts,
                started_at=job.started_at,
                run_started_at=job.run_started_at,  # no run began
                run_seen_at=job.run_seen_at,
            )
            if job.id not in self._waiting:
                self._waiting.add(job.id)
                await asyncio.to_thread(self.jobs.add_event, job.id, f"Waiting for compute: {exc}")
            return
        except (EngineUnavailable, OSError, YunError) as exc:
            await self._end(moved, states.FAILED, error=("trainer_unavailable", f"The trainer could not start: {exc}"))
            return
        what = "resumed from its last checkpoint" if moved.attempts > 1 else "started"
        await asyncio.to_thread(self.jobs.add_event, job.id, f"Fine-tuning job {what}.")

    async def _prepare(self, job: JobRecord, workdir: Path) -> tuple[str, ...]:
        """The trainer's inputs in `workdir`: the files (fetched once) and its spec, whose paths are relative
        to the directory the trainer runs in (this one on `local`, its node's own on a cluster)."""
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {"training_file": job.training_file, "validation_file": job.validation_file}
        local: dict[str, str | None] = {}
        for name, file_id in files.items():
            if file_id is None:
                local[name] = None
                continue
            target = workdir / f"{name}.jsonl"
            if not target.exists():
                await self._fetch(job.org_id, file_id, target)
            local[name] = target.name
        base = await asyncio.to_thread(self.service.catalog.get, job.model_id)
        hyper = job.hyperparameters
        spec = {
            "base_model": base.path,
            "training_file": local["training_file"],
            "validation_file": local["validation_file"],
            "output_dir": "out",
            "n_epochs": hyper["n_epochs"],
            "batch_size": hyper["batch_size"],
            "learning_rate": BASE_LEARNING_RATE * float(hyper["learning_rate_multiplier"]),
            "seed": job.seed,
            "threads": self.config.threads,
            **dict(self.config.options),
        }
        (workdir / SPEC).write_text(json.dumps(spec, indent=1))
        inputs = (SPEC, *(name for name in local.values() if name is not None))
        if job.attempts > 1:  # a run started again: from the newest checkpoint kept, wherever it lands
            kept = await self.checkpoints.restore(job.id, workdir)
            if kept is not None:
                inputs += kept.inputs()
        return inputs

    async def _fetch(self, org_id: str, file_id: str, target: Path) -> None:
        found = await asyncio.to_thread(self.service.file_records.get, org_id, file_id)
        if found is None:
            raise YunError(f"file {file_id} is gone")
        partial = target.with_suffix(".part")
        with partial.open("wb") as out:
            async for chunk in await self.service.files.open(found.storage_key):
                out.write(chunk)
        partial.replace(target)

    # -- following --------------------------------------------------------------------------------------
    async def _follow(self, job: JobRecord) -> None:
        try:
            await self._follow_task(job)
        except EngineUnavailable as exc:  # its node did not answer: asked again next pass
            log.warning("fine-tuning job %s: %s", job.id, exc)

    async def _follow_task(self, job: JobRecord) -> None:
        self._waiting.discard(job.id)
        ended = await self._record_events(job)
        job = await asyncio.to_thread(self.jobs.get_any, job.id)
        if job.status != states.RUNNING:
            return
        if ended is not None:
            await self._ended(job, ended)
            return
        status = await self.cluster.task(job.id)
        if status is not None and status.running:
            if job.cancel_requested and job.id not in self._stopping:
                self._stopping.add(job.id)
                asyncio.get_running_loop().create_task(self._stop(job.id), name=f"yun-stop-{job.id}")
            return
        if status is not None:  # it ended without saying how (killed): read what it wrote last
            ended = await self._record_events(job)
            if ended is not None:
                await self._ended(await asyncio.to_thread(self.jobs.get_any, job.id), ended)
                return
        await self._vanished(job, None if status is None else status.exit_code)

    async def _stop(self, job_id: str) -> None:
        try:
            await self.cluster.stop_task(job_id)
        finally:
            self._stopping.discard(job_id)
            self.poke()

    async def _vanished(self, job: JobRecord, exit_code: int | None) -> None:
        how = "was lost (Yun restarted)" if exit_code is None else f"exited with code {exit_code}"
        job = await asyncio.to_thread(self.jobs.get_any, job.id)  # with the events read last
        until = _last_sign_of_life(job)
        if job.cancel_requested:
            await self._end(job, states.CANCELLED, ran_until=until)
        elif job.attempts < states.MAX_ATTEMPTS:
            seconds = await asyncio.to_thread(self._record_run, job, until)
            moved = await asyncio.to_thread(
                self.jobs.transition,
                job.id,
                states.QUEUED,
                from_=(states.RUNNING,),
                runner=None,
                compute_seconds=seconds,
            )
            if moved is not None:
                await asyncio.to_thread(
                    self.jobs.add_event,
                    job.id,
                    f"The trainer {how}; the job resumes from its last checkpoint.",
                    level="warn",
                )
        else:
            message = f"The trainer {how} on its last of {states.MAX_ATTEMPTS} attempts."
            await self._end(job, states.FAILED, error=("trainer_failed", message), ran_until=until)

    def _record_run(self, job: JobRecord, ended_at: datetime) -> float:
        """Record the compute of the job's current run (once: again, it changes nothing); returns the job's
        CPU-seconds over all its runs recorded."""
        if job.run_started_at is not None and job.attempts > 0:
            r = self._resources()
            run = TrainingRun(
                job.id, job.attempts, job.org_id, job.model_id, r.shape, r.cpus, r.gpus, job.run_started_at, ended_at
            )
            self.service.billing.record_run(run)
        return self.service.billing.cpu_seconds(job.id)

    async def _task_file(self, job: JobRecord, name: str, offset: int = 0) -> bytes | None:
        """A file of the job's trainer, from the backend that runs (or ran) it; when the backend does not
        know the task (a local task lost with the controller that started it), the copy in this runner's
        working directory, where a local trainer wrote it."""
        data = await self.cluster.task_file(job.id, name, offset)
        if data is None:
            data = await asyncio.to_thread(read_from, self._dir(job), name, offset)
        return data

    async def _record_events(self, job: JobRecord) -> dict[str, Any] | None:
        """Record the trainer's events after the job's offset; returns its final event if one was read."""
        data = await self._task_file(job, events_file(job.attempts), job.progress_offset)
        if data is None:
            return None
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next pass
        final = None
        seen: float | None = None
        pos = saved = 0  # bytes of `data` read / whose events are recorded with the offset past them
        for line in data[:end].splitlines(keepends=True):
            start, pos = pos, pos + len(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event.get("at"), int | float):
                seen = max(seen or 0.0, float(event["at"]))
            if event.get("type") == "checkpoint":
                # Copying it back takes seconds (through Ray from its node): first save the offset past the
                # events recorded so far, so a controller killed during the copy makes its successor record
                # none of them twice; the checkpoint itself stays ahead of the offset until it is kept (a
                # crash copies it again).
                if start > saved:
                    await asyncio.to_thread(self.jobs.update, job.id, progress_offset=job.progress_offset + start)
                    saved = start
                await self.checkpoints.keep(job.id, event, lambda name: self._task_file(job, name))
            final = await asyncio.to_thread(self._apply, job, event, job.progress_offset + pos) or final
        if end:
            progress: dict[str, Any] = {"progress_offset": job.progress_offset + end}
            if seen is not None:
                progress["run_seen_at"] = datetime.fromtimestamp(seen, UTC)
            await asyncio.to_thread(self.jobs.update, job.id, **progress)
        return final

    def _apply(self, job: JobRecord, e: dict[str, Any], offset: int) -> dict[str, Any] | None:
        """Record one trainer event. An event recorded saves, in its transaction, the job's offset past its
        line (`offset`): a runner killed between two of them leaves its successor none to record twice."""
        kind = e.get("type")
        past: dict[str, Any] = {"progress_offset": offset}
        if kind == "step":
            loss = e.get("loss")
            data = {"step": e.get("step"), "train_loss": loss, "total_steps": e.get("total_steps")}
            past["trained_tokens"] = int(e.get("trained_tokens") or 0)
            message = f"Step {e.get('step')}: training loss={loss:.4f}"
            self.jobs.add_event(job.id, message, type="metrics", data=data, changes=past)
        elif kind == "epoch":
            valid = e.get("valid_loss")
            text = f"Epoch {e.get('epoch')} done: training loss={e.get('train_loss'):.4f}"
            if valid is not None:
                text += f", validation loss={valid:.4f}"
            data = {k: v for k, v in e.items() if k not in ("type", "at")}
            self._epochs[job.id] = data
            self.jobs.add_event(job.id, text, type="metrics", data=data, changes=past)
        elif kind == "checkpoint":
            step = int(e.get("step") or 0)
            epoch = self._epochs.get(job.id, {})
            metrics = {"step": step, "train_loss": epoch.get("train_loss"), "valid_loss": epoch.get("valid_loss")}
            self.jobs.add_checkpoint(
                job.id,
                step=step,
                epoch=int(e.get("epoch") or 0),
                metrics=metrics,
                model=f"{fine_tuned_name(job)}:ckpt-step-{step}",
                adapter=str(e.get("adapter")),
            )
        elif kind == "started" and e.get("resumed_from") is not None:
            self.jobs.add_event(job.id, f"Resumed from the checkpoint of epoch {e.get('resumed_from')}.", changes=past)
        elif kind in ("done", "cancelled", "error"):
            self._epochs.pop(job.id, None)
            return e
        return None

    # -- ending -----------------------------------------------------------------------------------------
    async def _ended(self, job: JobRecord, final: dict[str, Any]) -> None:
        kind = final["type"]
        if kind == "done":
            trained = int(final.get("trained_tokens") or job.trained_tokens)
            await asyncio.to_thread(self.jobs.update, job.id, trained_tokens=trained)
            try:
                adapter = await self._task_file(job, str(final["adapter"]))
                if adapter is None:
                    raise YunError(f"the trainer's adapter {final['adapter']} is missing")
                model = await asyncio.to_thread(self._register, job, adapter)
            except (YunError, OSError, ValueError) as exc:
                await self._end(job, states.FAILED, error=("model_registration_failed", str(exc)))
                return
            await self._end(await asyncio.to_thread(self.jobs.get_any, job.id), states.SUCCEEDED, model=model)
        elif kind == "cancelled":
            await self._end(job, states.CANCELLED)
        else:
            await self._end(job, states.FAILED, error=("training_failed", str(final.get("message", "training failed"))))

    def _register(self, job: JobRecord, adapter: bytes) -> str:
        name = fine_tuned_name(job)
        self.config.adapters_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = self.config.adapters_dir / f"{job.id}.gguf"
        if not kept.exists():
            kept.with_suffix(".part").write_bytes(adapter)
            kept.with_suffix(".part").replace(kept)
        catalog = self.service.catalog
        base = catalog.get(job.model_id)
        catalog.add_fine_tuned(name, base, kept, job.org_id, job.id)
        self.service.deployments.roll(base.id)  # its replicas are replaced by ones that load the adapter
        price = self.service.billing.price(base.id)
        if price is not None and self.service.billing.price(name) is None:
            # Priced like its base until the operator sets its own price.
            usd = [str(Decimal(n) / 10**9) for n in (price.input_per_mtok, price.output_per_mtok)]
            cached = str(Decimal(price.cached_input_per_mtok) / 10**9)
            self.service.billing.billing.set_price(name, usd[0], usd[1], cached)
        return name

    async def _end(
        self,
        job: JobRecord,
        status: str,
        *,
        model: str | None = None,
        error: tuple[str, str] | None = None,
        ran_until: datetime | None = None,
    ) -> None:
        finished = _now()
        started = job.started_at or finished
        seconds = (finished - started).total_seconds()
        cpu_seconds = await asyncio.to_thread(self._record_run, job, ran_until or finished)
        changes: dict[str, Any] = {
            "finished_at": finished,
            "compute_seconds": cpu_seconds,
            "runner": None,
        }
        if model is not None:
            changes["fine_tuned_model"] = model
        if error is not None:
            changes["error"] = {"code": error[0], "message": error[1], "param": None}
        # Settled before the job shows as ended, so whoever sees it ended also sees its bill. (Only this
        # runner ends a running job; a crash between the two runs the job again, and its hold, already
        # settled, is not charged twice.)
        job = await asyncio.to_thread(self.jobs.get_any, job.id)
        cost = await asyncio.to_thread(self._settle, job, status, seconds)
        moved = await asyncio.to_thread(self.jobs.transition, job.id, status, from_=states.may_move(status), **changes)
        if moved is None:
            return
        await self.cluster.release_task(job.id)
        text = {
            states.SUCCEEDED: f"The job has successfully completed. New fine-tuned model: {model}.",
            states.CANCELLED: "The job was cancelled.",
            states.FAILED: f"The job failed: {error[1] if error else 'unknown error'}",
        }[status]
        await asyncio.to_thread(
            self.jobs.add_event,
            job.id,
            f"{text} Trained {moved.trained_tokens:,} tokens, charged ${cost / 1e9:.6f}.",
            level="error" if status == states.FAILED else "info",
            data={"trained_tokens": moved.trained_tokens, "cost_nanodollars": cost},
        )
        # After its last event (whoever sees it ended sees why): nothing will resume from what it kept.
        try:
            await self.checkpoints.forget(job.id)
        except (YunError, OSError) as exc:
            log.warning("fine-tuning job %s: its kept checkpoint was not deleted: %s", job.id, exc)

    def _settle(self, job: JobRecord, status: str, seconds: float) -> int:
        hold = self.service.billing.hold_of(job.id)
        if hold is None:
            return 0
        planned = job.training_tokens * int(job.hyperparameters.get("n_epochs", 1))
        trained = min(job.trained_tokens, planned)
        return self.service.billing.settle(hold, trained, _usage_status(status), seconds, f"job:{job.id}")

    def _active_jobs(self) -> list[JobRecord]:
        """After settling leftover holds: the jobs validating, queued or running, oldest first."""
        self._settle_leftovers()
        return self.jobs.in_status(states.ACTIVE)

    def _settle_leftovers(self) -> None:
        """Holds of jobs that are over, or that were never recorded (a crash mid-create): settled with what
        the job trained (nothing, for a job never recorded)."""
        for job_id, holds in self.service.billing.billing.money.training_holds().items():
            try:
                job: JobRecord | None = self.jobs.get_any(job_id)
            except NotFound:
                job = None
            if job is not None and job.status not in states.FINAL:
                continue
            for hold in holds:
                if job is None:
                    self.service.billing.settle(hold, 0, "error", 0.0, "recovery")
                else:
                    self._settle(job, job.status, 0.0)


def _last_sign_of_life(job: JobRecord) -> datetime:
    """When the trainer of the job's current run last said something (its last event), within the run; the
    run's start if it said nothing."""
    now = _now()
    start = job.run_started_at or now
    return min(max(job.run_seen_at or start, start), now)


def _usage_status(status: str) -> str:
    return {states.SUCCEEDED: "ok", states.CANCELLED: "cancelled", states.FAILED: "failed"}.get(status, status)


def _now() -> datetime:
    return datetime.now(UTC)
