"""The `Cluster` seam: where replicas run, behind one interface with backends `local` and `ray`.

The controller decides *what* runs (deployments, how many replicas, which secret each engine demands);
a `Cluster` backend decides *where* and keeps each replica's engine process alive there. Nothing above
the controller (gateway, admin API, health) talks to a backend: they read the replica registry in the
database, which the controller fills from `Cluster.replicas()`.

A replica is one engine process serving one deployment's model over OpenAI-shaped HTTP, bound to its
node's address and refusing any request without the replica's secret (`Authorization: Bearer <secret>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "Cluster",
    "ClusterEvent",
    "EngineArgs",
    "ReplicaOrder",
    "ReplicaState",
    "ReplicaStatus",
    "Resources",
    "TaskOrder",
    "TaskStatus",
]

ReplicaState = Literal["starting", "ready", "restarting", "failed", "stopped"]


@dataclass(frozen=True)
class Resources:
    """What one replica takes from its node. `shape` names it for compute prices and metering."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 0

    @property
    def shape(self) -> str:
        """A stable name such as `cpu1` or `cpu8-gpu1-mem32768`: replica-seconds are metered and priced by it."""
        parts = [f"cpu{self.cpus:g}"]
        if self.gpus:
            parts.append(f"gpu{self.gpus:g}")
        if self.memory_mb:
            parts.append(f"mem{self.memory_mb}")
        return "-".join(parts)


@dataclass(frozen=True)
class EngineArgs:
    """How the engine of each replica is started."""

    threads: int = 2
    parallel: int = 4
    """Requests one replica runs at once (llama.cpp slots)."""
    context: int = 4096
    """Tokens per slot (prompt + output)."""
    lora: tuple[str, ...] = ()
    """LoRA adapter GGUFs the llama.cpp engine loads with the model (fine-tunes of it), ids 0, 1, ... in this
    order; each is off unless a request selects it (`"lora": [{"id": N, "scale": 1.0}]`)."""


@dataclass(frozen=True)
class ReplicaOrder:
    """One replica the controller asks a backend to run. Backend-neutral: the same order runs as a local
    process or as a Ray actor."""

    replica_id: str
    deployment_id: str
    model_id: str
    kind: Literal["chat", "embedding"]
    engine: Literal["llamacpp", "vllm"]
    model_path: str
    """Where the node finds the weights (a GGUF file for llama.cpp, a model directory or name for vLLM)."""
    secret: str = field(repr=False)
    """What the engine demands of every request (`Authorization: Bearer ...`); never logged."""
    args: EngineArgs = EngineArgs()
    resources: Resources = Resources()
    start_timeout_s: float = 120.0
    command: tuple[str, ...] | None = None
    """Replaces the engine command (tests, custom engines). `{port}`, `{host}` and `{model}` are
    substituted. The secret is only in the environment, as `YUN_ENGINE_SECRET` (and `VLLM_API_KEY` for
    vLLM): a command line is readable by every user of the machine, so a command with `{secret}` is refused."""


@dataclass(frozen=True)
class ReplicaStatus:
    """What a backend knows of one replica it runs."""

    replica_id: str
    deployment_id: str
    state: ReplicaState
    endpoint: str | None = None
    """`http://host:port` of the engine once it answers; None before (and after it stopped)."""
    node: str = ""
    """The node it runs on (a host name, or Ray's node id)."""
    restarts: int = 0
    error: str | None = None
    """The last failure, for operators (`yun deployments show`, `/health`)."""


@dataclass(frozen=True)
class ClusterEvent:
    """Something that happened to a replica: started, ready, died, restarted, moved, failed, stopped."""

    at: float
    """Unix time."""
    replica_id: str
    kind: str
    message: str = ""


@dataclass(frozen=True)
class TaskOrder:
    """One batch process (a fine-tuning run) a backend runs to its end with the resources asked for.

    `workdir` is a directory of the caller's machine that holds the task's inputs. On `local` the process
    runs in it. On a cluster the process runs in a directory of its own on the node it was placed on: the
    files named in `inputs` are copied there first, and what the process writes is read back through
    `Cluster.task_file` (so nothing needs a disk shared by the nodes). Paths in `command` and in the
    inputs are therefore relative to the working directory."""

    task_id: str
    command: tuple[str, ...]
    workdir: str
    resources: Resources = Resources()
    env: tuple[tuple[str, str], ...] = ()
    """Added to the process's environment (e.g. OMP_NUM_THREADS)."""
    inputs: tuple[str, ...] = ()
    """Files of `workdir` (relative names) the process reads."""


@dataclass(frozen=True)
class TaskStatus:
    task_id: str
    running: bool
    exit_code: int | None = None
    """Once it ended: 0 done, non-zero failed; negative: killed by that signal."""
    node: str = ""


class Cluster(Protocol):
    """A place to run replicas. Implementations: `yun.cluster.backends.LocalBackend` (processes on this
    machine) and `yun.cluster.backends.ray.RayBackend` (Ray actors on a Ray cluster)."""

    name: str
    """`local` or `ray`."""

    async def start(self) -> None:
        """Connect to the compute (no-op for local); raises EngineUnavailable with a clear message when the
        compute cannot be reached (a Ray address that does not answer)."""
        ...

    async def place(self, order: ReplicaOrder) -> ReplicaStatus:
        """Start one replica and wait until its engine answers (state `ready`, with an endpoint), up to
        `order.start_timeout_s`; raises EngineUnavailable with the reason if it cannot start. Placing a
        replica id that is already running returns its status and starts nothing."""
        ...

    async def stop(self, replica_id: str) -> None:
        """Stop one replica and free its resources. Unknown ids are ignored."""
        ...

    async def replicas(self) -> Sequence[ReplicaStatus]:
        """Every replica this backend runs, with its current endpoint (which changes when the backend
        restarted it, possibly on another node). Replicas left by a previous controller are included
        (adopted): a standby that takes over calls this instead of placing duplicates."""
        ...

    def events(self, since: float = 0.0) -> Sequence[ClusterEvent]:
        """Recent events, oldest first, after `since` (Unix time)."""
        ...

    async def start_task(self, order: TaskOrder) -> TaskStatus:
        """Start a batch process; raises EngineUnavailable when it cannot (no such backend support, no
        resources). Starting a task id that runs returns its status and starts nothing."""
        ...

    async def task(self, task_id: str) -> TaskStatus | None:
        """A task's status, or None when this backend does not know it (never started here, or lost
        with a controller that died: on `local` tasks die with their controller)."""
        ...

    async def stop_task(self, task_id: str, grace_s: float = 10.0) -> None:
        """Ask a task to stop (SIGTERM), and kill it after `grace_s`. Unknown ids are ignored."""
        ...

    async def task_file(self, task_id: str, name: str, offset: int = 0) -> bytes | None:
        """The bytes from `offset` of a file the task wrote in its working directory (`name` relative to
        it), while the backend knows the task (running, or ended and not yet released); None when the
        backend does not know the task or the file does not exist. Raises EngineUnavailable when the
        task's node cannot be asked."""
        ...

    async def release_task(self, task_id: str) -> None:
        """Forget an ended task and free what it kept (its working directory's files on a cluster node)
        once its outputs were read. Unknown ids are ignored."""
        ...

    async def close(self, *, stop_replicas: bool) -> None:
        """Let go of the compute. `stop_replicas=False` leaves replicas running for the next controller
        where the backend can (ray); local replicas are processes of this one and always stop."""
        ...
