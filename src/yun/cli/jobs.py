"""`yun jobs`: fine-tuning jobs of the key's organization (/v1/fine_tuning/jobs), as a client of the HTTP API."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from yun.cli._client import AdminClient, connect, path
from yun.cli._common import CliError
from yun.cli._output import print_json, print_table, say

__all__ = ["jobs_app"]

jobs_app = typer.Typer(
    help="Fine-tuning jobs of your organization: create, list, show, follow, events, cancel.",
    no_args_is_help=True,
)
Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]
JobId = Annotated[str, typer.Argument(help="Job id (ftjob-…).")]
_FINAL = ("succeeded", "failed", "cancelled")


def _when(t: int | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


@jobs_app.command("create")
def jobs_create(
    model: Annotated[str, typer.Argument(help="The base model to fine-tune.")],
    training_file: Annotated[str, typer.Argument(help="A file id of purpose fine-tune (`yun files upload`).")],
    suffix: Annotated[str | None, typer.Option("--suffix", help="Part of the fine-tuned model's name.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, max=50, help="Epochs [default: auto, 3].")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, max=256, help="Examples per step [default: auto, 4].")
    ] = None,
    lr_multiplier: Annotated[
        float | None,
        typer.Option("--lr-multiplier", min=0.0, max=100.0, help="x the base learning rate [default: auto, 1]."),
    ] = None,
    validation_file: Annotated[str | None, typer.Option("--validation-file", help="A file id.")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, max=2**31 - 1, help="Seed of the run [default: random].")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Then follow it to its end (as `yun jobs follow`).")] = False,
    json: Json = False,
) -> None:
    """Create a fine-tuning job, returned at once in validating_files: the jobs worker then checks the file
    and holds the job's cost before it is queued (or fails it, saying why: `yun jobs show`)."""
    hyper = {"n_epochs": epochs, "batch_size": batch_size, "learning_rate_multiplier": lr_multiplier}
    body: dict[str, Any] = {"model": model, "training_file": training_file}
    body["hyperparameters"] = {k: v for k, v in hyper.items() if v is not None}
    for key, value in (("suffix", suffix), ("validation_file", validation_file), ("seed", seed)):
        if value is not None:
            body[key] = value
    with connect() as client:
        job = client.post("/v1/fine_tuning/jobs", body)
        if json:
            print_json(job)
        else:
            say(job["id"])
        if follow:
            _follow(client, job["id"])


@jobs_app.command("list")
def jobs_list(json: Json = False) -> None:
    """Your organization's jobs, newest first."""
    with connect() as client:
        found = client.get("/v1/fine_tuning/jobs", limit=100)
    if json:
        print_json(found)
        return
    print_table(
        ["id", "model", "status", "fine-tuned model", "trained tokens", "created"],
        (
            [
                j["id"],
                j["model"],
                j["status"],
                j["fine_tuned_model"] or "-",
                j["trained_tokens"] or "-",
                _when(j["created_at"]),
            ]
            for j in found["data"]
        ),
    )


@jobs_app.command("show")
def jobs_show(job_id: JobId) -> None:
    """One job, as JSON."""
    with connect() as client:
        print_json(client.get(path("v1", "fine_tuning", "jobs", job_id)))


@jobs_app.command("events")
def jobs_events(
    job_id: JobId,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many of the newest events.")] = 50,
) -> None:
    """The job's events, oldest first (the last `--limit`)."""
    with connect() as client:
        found = client.get(path("v1", "fine_tuning", "jobs", job_id, "events"), limit=limit)
    print_table(
        ["time", "level", "message"],
        ([_when(e["created_at"]), e["level"], e["message"]] for e in reversed(found["data"])),
    )


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId) -> None:
    """Cancel a job: a queued one at once, a running one within a step (it pays for the steps it ran)."""
    with connect() as client:
        job = client.post(path("v1", "fine_tuning", "jobs", job_id, "cancel"), {})
    say(f"{job_id}: {job['status']}{'' if job['status'] == 'cancelled' else ' (stopping)'}")


@jobs_app.command("follow")
def jobs_follow(job_id: JobId) -> None:
    """Follow a job to its end: a progress bar of its steps and the latest loss; exits 1 unless it succeeds."""
    with connect() as client:
        _follow(client, job_id)


def _follow(client: AdminClient, job_id: str) -> None:
    url = path("v1", "fine_tuning", "jobs", job_id)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    seen: set[str] = set()
    with Progress(*columns, disable=not sys.stderr.isatty(), transient=False) as progress:
        task = progress.add_task("queued", total=None)
        while True:
            job = client.get(url)
            events = client.get(f"{url}/events", limit=100)["data"]
            for e in reversed(events):
                if e["id"] in seen:
                    continue
                seen.add(e["id"])
                data = e.get("data") or {}
                if e["type"] == "metrics" and "total_steps" in data:
                    loss = data.get("train_loss")
                    text = f"{job['status']}  loss {loss:.4f}" if isinstance(loss, int | float) else job["status"]
                    progress.update(task, completed=data["step"], total=data["total_steps"], description=text)
                elif not sys.stderr.isatty():
                    typer.echo(e["message"], err=True)
                else:
                    progress.console.print(e["message"])
            if job["status"] in _FINAL:
                break
            if not events or "total_steps" not in (events[0].get("data") or {}):
                progress.update(task, description=job["status"])
            time.sleep(1.0)
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise CliError(f"{job_id} {job['status']}" + (f": {error.get('message')}" if error else ""))
    say(f"{job_id} succeeded: {job['fine_tuned_model']} (trained {job['trained_tokens']:,} tokens)")
