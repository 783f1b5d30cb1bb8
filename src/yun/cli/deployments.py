"""`yun deployments`: which models run on the compute, how many replicas of what shape, for whom.

The server's controller makes the replicas match what is written here; these commands only write and
read the records (`/admin/deployments`).
"""

from __future__ import annotations

import json as jsonlib
import shlex
from typing import Annotated, Any

import typer

from yun.cli._client import connect, path
from yun.cli._common import CliError
from yun.cli._output import print_json, print_table, say, when

__all__ = ["deployments_app"]

deployments_app = typer.Typer(
    help="Deployments: which models run, how many replicas of what shape, shared or for one org.",
    no_args_is_help=True,
)

DeploymentId = Annotated[str, typer.Argument(help="Deployment id (dep-…) from `yun deployments list`.")]
Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]
Engine = Annotated[str | None, typer.Option("--engine", help="llamacpp (CPU) or vllm (GPU) (default: llamacpp).")]
Cpus = Annotated[float | None, typer.Option("--cpus", help="CPUs per replica (default: 1).")]
Gpus = Annotated[float | None, typer.Option("--gpus", help="GPUs per replica (default: 0).")]
MemoryMb = Annotated[int | None, typer.Option("--memory-mb", help="Memory per replica, MiB (default: not reserved).")]
Threads = Annotated[int | None, typer.Option("--threads", help="Engine threads per replica (default: the server's).")]
Parallel = Annotated[
    int | None, typer.Option("--parallel", help="Requests one replica runs at once (default: the server's).")
]
Context = Annotated[int | None, typer.Option("--context", help="Tokens per request slot (default: the server's).")]
Command = Annotated[
    str | None,
    typer.Option("--command", help="Engine command line replacing the default; {host} {port} {model} filled in."),
]
IdleTimeout = Annotated[
    float | None,
    typer.Option("--idle-timeout", help="Seconds without requests before scaling to zero (default: never)."),
]
Autoscale = Annotated[
    str | None,
    typer.Option(
        "--autoscale",
        help='Autoscaling policy, JSON: {"target_in_flight": 2, "up_after_s": 5, "down_after_s": 60}; '
        "every field optional; {} for none (default: none).",
    ),
]
Replicas = Annotated[int | None, typer.Option("--replicas", help="Replicas to run (default: 1).")]
Min = Annotated[int | None, typer.Option("--min", help="Fewest replicas, the autoscaler's floor (default: 1).")]
Max = Annotated[int | None, typer.Option("--max", help="Most replicas (default: max(min, replicas)).")]

_RESETTABLE = (
    "engine", "cpus", "gpus", "memory_mb", "threads", "parallel", "context", "command", "idle_timeout_s", "autoscale",
)  # fmt: skip


def _engine_args(**given: Any) -> dict[str, Any]:
    """The options given, as the API names them (a command line split as a shell would)."""
    body = {k: v for k, v in given.items() if v is not None}
    if "command" in body:
        try:
            body["command"] = shlex.split(body["command"])
        except ValueError as exc:
            raise CliError(f"--command: {exc}") from exc
    if "autoscale" in body:
        try:
            body["autoscale"] = jsonlib.loads(body["autoscale"])
        except ValueError as exc:
            raise CliError(f"--autoscale: not JSON: {exc}") from exc
    return body


def _default(value: Any) -> Any:
    return "default" if value is None else value


def _owner(d: dict[str, Any]) -> str:
    return d["owner"] or "shared"


def _counts(d: dict[str, Any]) -> str:
    return f"{d['ready']}/{d['desired']} ({d['min']}-{d['max']})"


@deployments_app.command("list")
def deployments_list(
    model: Annotated[str | None, typer.Option("--model", help="Only deployments of this model.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only those dedicated to this org (id or name).")] = None,
    json: Json = False,
) -> None:
    """Every deployment: ready/desired replicas (min-max), shape, generation, state and why it is not running."""
    with connect() as client:
        found = client.get("/admin/deployments", model=model, owner=owner)
    if json:
        print_json(found)
        return
    print_table(
        ["id", "model", "owner", "engine", "ready/desired (min-max)", "shape", "gen", "state", "message"],
        (
            [d["id"], d["model"], _owner(d), d["engine"], _counts(d), d["shape"], d["generation"], d["state"]]
            + [d["message"]]
            for d in found["data"]
        ),
    )


@deployments_app.command("show")
def deployments_show(deployment_id: DeploymentId, json: Json = False) -> None:
    """One deployment and its replicas: where each runs, its state, restarts, and why failed ones failed."""
    with connect() as client:
        d = client.get(path("admin", "deployments", deployment_id))
    if json:
        print_json(d)
        return
    memory = f"{d['memory_mb']} MiB" if d["memory_mb"] else "memory not reserved"
    lines = [
        ("id", d["id"]),
        ("model", d["model"]),
        ("owner", _owner(d)),
        ("engine", d["engine"]),
        ("state", d["state"]),
        ("replicas", f"{d['ready']} ready of {d['desired']} desired (min {d['min']}, max {d['max']})"),
        ("resources", f"{d['cpus']:g} CPU, {d['gpus']:g} GPU, {memory} per replica ({d['shape']})"),
        (
            "engine args",
            f"threads {_default(d['threads'])}, parallel {_default(d['parallel'])}, context {_default(d['context'])}",
        ),
        ("generation", d["generation"]),
        ("created", when(d["created_at"])),
        ("updated", when(d["updated_at"])),
    ]
    if d["command"]:
        lines.append(("command", shlex.join(d["command"])))
    if d["idle_timeout_s"] is not None:
        lines.append(("idle timeout", f"{d['idle_timeout_s']:g} s"))
    if d.get("autoscale"):
        lines.append(("autoscale", ", ".join(f"{k} {v:g}" for k, v in d["autoscale"].items())))
    if d["message"]:
        lines.append(("message", d["message"]))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        say(f"{k.ljust(width)}  {v}")
    if not d["replicas"]:
        say("\nno replicas")
        return
    say("")
    print_table(
        ["replica", "state", "gen", "node", "endpoint", "restarts", "ready since"],
        (
            [r["id"], r["state"], r["generation"], r["node"], r["endpoint"], r["restarts"], when(r["ready_at"])]
            for r in d["replicas"]
        ),
    )
    for r in d["replicas"]:
        if r["state"] == "failed":
            say(f"{r['id']} failed: {r['error'] or 'no error recorded'}")


@deployments_app.command("create")
def deployments_create(
    model: Annotated[str, typer.Argument(help="A model of the catalog that Yun runs itself (not an external one).")],
    deployment_id: Annotated[str | None, typer.Option("--id", help="Deployment id (default: dep-<random>).")] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Dedicate it to this org (id or name) (default: shared).")
    ] = None,
    replicas: Replicas = None,
    min: Min = None,
    max: Max = None,
    engine: Engine = None,
    cpus: Cpus = None,
    gpus: Gpus = None,
    memory_mb: MemoryMb = None,
    threads: Threads = None,
    parallel: Parallel = None,
    context: Context = None,
    command: Command = None,
    idle_timeout: IdleTimeout = None,
    autoscale: Autoscale = None,
) -> None:
    """Deploy a model and print the deployment's id; the server's controller starts its replicas."""
    body = {"model": model, "id": deployment_id, "owner": owner, "replicas": replicas, "min": min, "max": max}
    body |= _engine_args(
        engine=engine,
        cpus=cpus,
        gpus=gpus,
        memory_mb=memory_mb,
        threads=threads,
        parallel=parallel,
        context=context,
        command=command,
        idle_timeout_s=idle_timeout,
        autoscale=autoscale,
    )
    with connect() as client:
        d = client.post("/admin/deployments", {k: v for k, v in body.items() if v is not None})
    say(d["id"])


@deployments_app.command("scale")
def deployments_scale(
    deployment_id: DeploymentId,
    replicas: Annotated[int | None, typer.Argument(help="Replicas to run, within min..max.")] = None,
    min: Min = None,
    max: Max = None,
) -> None:
    """Set how many replicas run, or the bounds (new bounds alone clamp the count into them)."""
    if replicas is None and min is None and max is None:
        raise CliError("give a replica count, --min or --max")
    body = {k: v for k, v in {"replicas": replicas, "min": min, "max": max}.items() if v is not None}
    with connect() as client:
        d = client.post(path("admin", "deployments", deployment_id, "scale"), body)
    say(f"{d['id']}: {d['desired']} replicas desired (min {d['min']}, max {d['max']}), {d['ready']} ready")


@deployments_app.command("update")
def deployments_update(
    deployment_id: DeploymentId,
    engine: Engine = None,
    cpus: Cpus = None,
    gpus: Gpus = None,
    memory_mb: MemoryMb = None,
    threads: Threads = None,
    parallel: Parallel = None,
    context: Context = None,
    command: Command = None,
    idle_timeout: IdleTimeout = None,
    autoscale: Autoscale = None,
    reset: Annotated[
        list[str] | None,
        typer.Option("--reset", help=f"Put a field back to its default (repeatable): {', '.join(_RESETTABLE)}."),
    ] = None,
) -> None:
    """Change the engine, its arguments or the resources per replica (replica counts: `scale`).

    Any change but --idle-timeout and --autoscale starts a new generation: the controller replaces the
    replicas, new ones ready before old ones drain."""
    body: dict[str, Any] = {}
    for field in reset or []:
        name = field.replace("-", "_")
        if name not in _RESETTABLE:
            raise CliError(f"--reset {field}: not a field that has a default (one of {', '.join(_RESETTABLE)})")
        body[name] = None
    body |= _engine_args(
        engine=engine,
        cpus=cpus,
        gpus=gpus,
        memory_mb=memory_mb,
        threads=threads,
        parallel=parallel,
        context=context,
        command=command,
        idle_timeout_s=idle_timeout,
        autoscale=autoscale,
    )
    if not body:
        raise CliError("nothing to change: give an option (see `yun deployments update --help`)")
    with connect() as client:
        before = client.get(path("admin", "deployments", deployment_id))
        d = client.patch(path("admin", "deployments", deployment_id), body)
    if d["generation"] != before["generation"]:
        say(f"{d['id']}: generation {d['generation']}; its replicas are replaced with ones that run it")
    else:
        say(f"{d['id']}: updated (generation {d['generation']}, replicas keep running)")


@deployments_app.command("delete")
def deployments_delete(deployment_id: DeploymentId) -> None:
    """Delete a deployment: the controller stops its replicas, then removes it."""
    with connect() as client:
        d = client.delete(path("admin", "deployments", deployment_id))
    say(f"deleting {d['id']}: the controller stops its replicas, then removes it")
