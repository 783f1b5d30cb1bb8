"""The `ray` cluster backend: each replica is a detached, named Ray actor that runs its engine on its node.

Replicas outlive the controller that placed them: actors are detached and named `yun-replica-<id>` in the
namespace `yun`, so a standby controller (another driver process) finds them by name and adopts them
instead of placing duplicates, and `close(stop_replicas=False)` leaves them serving. One deployment's
replicas are spread over nodes (see `RayBackend._where`); when an actor's process or node dies, Ray
restarts it (on another node if need be) and it starts its engine again there, with a new endpoint that
`replicas()` reports.

Every Ray call that blocks (connecting, naming, killing) runs off the event loop in a thread, and every
answer from an actor is awaited with a timeout: an actor whose node is gone stays RESTARTING for as long
as Ray cannot place it again, and an unbounded wait on it would hang the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from yun.cluster.backends.ray_actor import ReplicaActor
from yun.cluster.backends.ray_task import TaskActor
from yun.cluster.backends.supervised import RestartPolicy
from yun.cluster.backends.tasks import read_from, task_path
from yun.cluster.base import ClusterEvent, ReplicaOrder, ReplicaStatus, TaskOrder, TaskStatus
from yun.errors import ComputeBusy, EngineUnavailable

__all__ = ["ACTOR_PREFIX", "NAMESPACE", "TASK_PREFIX", "RayBackend", "spread_node"]

log = logging.getLogger("yun.cluster")

NAMESPACE = "yun"
ACTOR_PREFIX = "yun-replica-"
_EVENTS_KEPT = 1000
TASK_PREFIX = "yun-task-"
_RemoteReplica: Any = ray.remote(ReplicaActor)
_RemoteTask: Any = ray.remote(TaskActor)

T = TypeVar("T")


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run `fn` in a thread of its own that never holds up interpreter exit (ray.init can hang forever on
    an address where something half-answers; the default executor would then block shutdown)."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, which raises it
            done.set_exception(exc)

    threading.Thread(target=run, name="yun-ray-connect", daemon=True).start()
    return asyncio.wrap_future(done)


def spread_node(nodes: list[dict[str, Any]], placed: Iterable[tuple[str, str]], order: ReplicaOrder) -> str | None:
    """The live node (of `ray.nodes()`) that can hold `order` with the fewest replicas of its deployment,
    then the fewest replicas at all; None if no node has the resources. `placed`: (deployment, node) pairs."""
    need = {"CPU": order.resources.cpus, "GPU": order.resources.gpus, "memory": order.resources.memory_mb * 2**20}
    need = {name: amount for name, amount in need.items() if amount}
    fitting: list[str] = [
        node["NodeID"]
        for node in nodes
        if node.get("Alive") and all(node["Resources"].get(name, 0) >= amount for name, amount in need.items())
    ]
    if not fitting:
        return None
    pairs = list(placed)

    def load(node: str) -> tuple[int, int, str]:
        ours = sum(1 for deployment, on in pairs if on == node and deployment == order.deployment_id)
        return ours, sum(1 for _, on in pairs if on == node), node

    return min(fitting, key=load)


class RayBackend:
    """Replicas as Ray actors on the Ray cluster at `address`.

    - `address`: `HOST:PORT` of a running Ray head (its GCS), or `auto` (the cluster this machine is part of).
    - `node_ip_address`: this driver's address as Ray should know it (None: Ray picks it).
    - `log_dir`: where each node writes its engines' logs (None: `yun-replicas/` in the node's Ray temp dir).
    - `policy`: how the engine inside each actor is restarted when it dies or hangs, as for the local
      backend.
    - `actor_max_restarts`: how often Ray restarts an actor whose process or node died (-1: always).
    - `connect_timeout_s`: how long `start()` waits for the cluster to answer.
    - `call_timeout_s`: how long any one question to an actor may take.
    - `task_start_timeout_s`: how long a batch task may wait for a node with its resources before
      `start_task` gives up (ComputeBusy: the job waits in its queue and is tried again).
    - `task_read_timeout_s`: how long reading one of a task's files (its adapter) may take.
    """

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        node_ip_address: str | None = None,
        log_dir: str | None = None,
        policy: RestartPolicy | None = None,
        actor_max_restarts: int = -1,
        connect_timeout_s: float = 30.0,
        call_timeout_s: float = 10.0,
        task_start_timeout_s: float = 60.0,
        task_read_timeout_s: float = 60.0,
    ) -> None:
        self.address = address
        self.node_ip_address = node_ip_address
        self.log_dir = log_dir
        self.policy = policy or RestartPolicy()
        self.actor_max_restarts = actor_max_restarts
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        self.task_start_timeout_s = task_start_timeout_s
        self.task_read_timeout_s = task_read_timeout_s
        self._connected = False
        self._owns_connection = False
        self._events: deque[ClusterEvent] = deque(maxlen=_EVENTS_KEPT)
        self._seen: dict[str, float] = {}  # replica id -> time of the last actor event merged
        self._last: dict[str, ReplicaStatus] = {}  # what each replica last said, for when it cannot answer
        self._placing: dict[str, asyncio.Lock] = {}
        self._nodes: dict[str, tuple[str, str]] = {}  # replica id -> (deployment id, node id) it runs on

    async def start(self) -> None:
        if self._connected:
            return
        await self._reachable()
        if ray.is_initialized():  # this process is connected already (one Ray connection per process)
            self._connected = True
            return
        connect = _in_daemon_thread(
            lambda: ray.init(
                address=self.address,
                namespace=NAMESPACE,
                _node_ip_address=self.node_ip_address,
                log_to_driver=False,  # engines' output stays in their log files on their nodes
                logging_level=logging.WARNING,
            )
        )
        try:
            await asyncio.wait_for(asyncio.shield(connect), self.connect_timeout_s)
        except TimeoutError:
            raise EngineUnavailable(
                f"no Ray cluster answered at {self.address} within {self.connect_timeout_s:g}s"
            ) from None
        except (ConnectionError, RayError, RuntimeError, ValueError) as exc:
            raise EngineUnavailable(f"cannot connect to the Ray cluster at {self.address}: {exc}") from exc
        self._connected = self._owns_connection = True

    async def _reachable(self) -> None:
        """Refuse at once an address where nothing listens: ray.init would retry it forever, in a thread
        that can then never be stopped (it is only left behind when something answers but not Ray)."""
        if self.address == "auto":
            return
        host, _, port = self.address.rpartition(":")
        if "://" in self.address or not host or not port.isdigit():
            raise EngineUnavailable(
                f"the Ray address {self.address!r} is not HOST:PORT of a Ray head (its GCS port, 6379 by "
                "default) nor `auto`"
            )
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 5.0)
        except (OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"no Ray cluster answers at {self.address}: {exc or 'timed out'}") from None
        writer.close()
        await writer.wait_closed()

    async def place(self, order: ReplicaOrder) -> ReplicaStatus:
        self._require_connection()
        # One place at a time per id in this process (across controllers, `get_if_exists` below decides).
        async with self._placing.setdefault(order.replica_id, asyncio.Lock()):
            return await self._place(order)

    async def _place(self, order: ReplicaOrder) -> ReplicaStatus:
        name = ACTOR_PREFIX + order.replica_id
        existing = await self._lookup(order.replica_id)
        if existing is not None:
            status = await self._ready(existing, order, placed_now=False)
            if status.state != "failed":
                return status  # placed already (by us or a previous controller): start nothing
            await self._kill(order.replica_id, existing)  # a failed one is replaced by a fresh one
        resources = order.resources
        options: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "get_if_exists": True,  # two controllers placing the same id at once get one actor
            "num_cpus": resources.cpus,
            "num_gpus": resources.gpus,
            "max_restarts": self.actor_max_restarts,
            "max_task_retries": -1,  # a question asked while the actor restarts is answered by the new one
            "scheduling_strategy": await self._where(order),
        }
        if resources.memory_mb:
            options["memory"] = resources.memory_mb * 1024 * 1024
        # Its fine-tunes' adapters go with it: its node may not see this machine's disk.
        adapters = await asyncio.to_thread(_read_adapters, order)
        actor = await self._blocking(
            lambda: _RemoteReplica.options(**options).remote(order, self.log_dir, self.policy, adapters)
        )
        status = await self._ready(actor, order, placed_now=True)
        if status.state == "failed":
            raise EngineUnavailable(status.error or f"replica {order.replica_id} could not start")
        return status

    async def _where(self, order: ReplicaOrder) -> Any:
        """Ray's SPREAD spreads every actor round robin, not one deployment's replicas: with other
        deployments placed in between, two replicas of one deployment can share a node while another
        node has none. So the node is chosen here (the fitting node with the fewest replicas of the
        deployment) and given to Ray as a soft preference: Ray still places the actor elsewhere when that
        node is full or gone, and restarts it elsewhere when that node dies.

        Measured with Ray 2.60: an actor that asks for no resources at all (no CPU, GPU or memory) is put
        on a random node whatever its strategy (SPREAD or node affinity), so such a replica is not spread."""
        nodes: list[dict[str, Any]] = await self._blocking(ray.nodes)
        node = spread_node(nodes, self._nodes.values(), order)
        if node is None:
            return "SPREAD"
        self._nodes[order.replica_id] = (order.deployment_id, node)
        # `_spill_on_unavailable` (private in Ray 2.60): without it a full preferred node is waited for.
        return NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True)

    async def _ready(self, actor: Any, order: ReplicaOrder, *, placed_now: bool) -> ReplicaStatus:
        """Wait for the actor's first engine start. An actor placed now that is not ready in time is removed:
        a replica reported as not started must not start later behind the controller's back."""
        timeout = order.start_timeout_s + self.call_timeout_s
        try:
            await self._ask(actor.ready.remote(), timeout)
        except TimeoutError:
            if placed_now:
                await self._kill(order.replica_id, actor)
            raise EngineUnavailable(
                f"replica {order.replica_id} was not ready within {timeout:g}s: Ray could not place its actor "
                f"(needs {order.resources.shape}) or its engine did not start"
            ) from None
        except RayError as exc:
            raise EngineUnavailable(f"replica {order.replica_id}: its actor failed: {exc}") from exc
        return await self._status(order.replica_id, actor)

    async def stop(self, replica_id: str) -> None:
        self._require_connection()
        actor = await self._lookup(replica_id)
        if actor is None:
            return
        try:  # let the engine end cleanly; the kill below is the backstop
            await self._ask(actor.stop.remote(), self.call_timeout_s)
        except (TimeoutError, RayError):
            pass
        await self._kill(replica_id, actor)
        self._placing.pop(replica_id, None)
        self._record(replica_id, "stopped", "")

    async def replicas(self) -> Sequence[ReplicaStatus]:
        self._require_connection()
        names: list[str] = await self._blocking(ray.util.list_named_actors)
        ids = [name.removeprefix(ACTOR_PREFIX) for name in names if name.startswith(ACTOR_PREFIX)]
        found = await asyncio.gather(*(self._named_status(replica_id) for replica_id in ids))
        return [status for status in found if status is not None]

    async def _named_status(self, replica_id: str) -> ReplicaStatus | None:
        actor = await self._lookup(replica_id)
        return None if actor is None else await self._status(replica_id, actor)  # None: stopped meanwhile

    async def _status(self, replica_id: str, actor: Any) -> ReplicaStatus:
        """Ask the replica's actor (bounded) and take the events it has that this backend has not seen."""
        known = self._last.get(replica_id)
        try:
            answer: tuple[ReplicaStatus, list[ClusterEvent]] = await self._ask(
                actor.status.remote(self._seen.get(replica_id, 0.0)), self.call_timeout_s
            )
        except (TimeoutError, RayError) as exc:
            # Timeout: Ray is restarting the actor (its node died) or cannot place it again yet. A Ray error:
            # the actor is dead for good (out of restarts, or killed meanwhile), or it cannot answer at all.
            broken = isinstance(exc, RayError)
            return ReplicaStatus(
                replica_id=replica_id,
                deployment_id=known.deployment_id if known else "",
                state="failed" if broken else "restarting",
                restarts=known.restarts if known else 0,
                error=f"its actor failed: {exc}" if broken else f"its actor did not answer in {self.call_timeout_s:g}s",
            )
        status, events = answer
        seen = self._seen.get(replica_id, 0.0)  # another question to the same actor may have taken some
        self._events.extend(event for event in events if event.at > seen)
        self._seen[replica_id] = max([seen, *(event.at for event in events)])
        if known is not None and known.node and status.node != known.node:
            self._record(replica_id, "moved", f"from node {known.node} to {status.node}: {status.endpoint}")
        self._last[replica_id] = status
        self._nodes[replica_id] = (status.deployment_id, status.node)
        return status

    def events(self, since: float = 0.0) -> Sequence[ClusterEvent]:
        """Events recorded here, and those the actors reported by the last `place()` or `replicas()`: an
        actor's event reaches this list only when the actor is next asked, so a caller that keeps a cursor
        (`since`) should keep it a few poll intervals behind and drop the events it has already seen."""
        return sorted((event for event in self._events if event.at > since), key=lambda event: event.at)

    # -- batch tasks (fine-tuning runs): one detached actor each, see ray_task.py --------------------------
    async def start_task(self, order: TaskOrder) -> TaskStatus:
        self._require_connection()
        existing = await self._lookup_named(TASK_PREFIX + order.task_id)
        if existing is not None:
            try:
                status: TaskStatus = await self._ask(existing.status.remote(), self.call_timeout_s)
                if status.running:
                    return status  # started already (by us or a previous controller): start nothing
            except (TimeoutError, RayError):
                pass
            await self._kill_named(TASK_PREFIX + order.task_id, existing)  # an ended run: a new one starts
        inputs = await asyncio.to_thread(_read_inputs, order)
        resources = order.resources
        options: dict[str, Any] = {
            "name": TASK_PREFIX + order.task_id,
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "get_if_exists": True,
            "num_cpus": resources.cpus,
            "num_gpus": resources.gpus,
            "max_restarts": 0,  # a lost task is run again by the job machinery, which knows how far it got
        }
        if resources.memory_mb:
            options["memory"] = resources.memory_mb * 1024 * 1024
        actor = await self._blocking(lambda: _RemoteTask.options(**options).remote(order, inputs))
        try:
            started: TaskStatus = await self._ask(actor.status.remote(), self.task_start_timeout_s)
        except TimeoutError:
            await self._kill_named(TASK_PREFIX + order.task_id, actor)
            raise ComputeBusy(
                f"task {order.task_id}: no node of the Ray cluster had {resources.shape} free within "
                f"{self.task_start_timeout_s:g}s"
            ) from None
        except RayError as exc:
            await self._kill_named(TASK_PREFIX + order.task_id, actor)
            raise EngineUnavailable(f"task {order.task_id} could not start on Ray: {_first_line(exc)}") from exc
        log.info("task %s started on node %s", order.task_id, started.node)
        return started

    async def task(self, task_id: str) -> TaskStatus | None:
        self._require_connection()
        actor = await self._lookup_named(TASK_PREFIX + task_id)
        if actor is None:
            return None
        try:
            status: TaskStatus = await self._ask(actor.status.remote(), self.call_timeout_s)
        except TimeoutError:  # its node is slow or being declared dead: asked again next time
            return TaskStatus(task_id, running=True)
        except RayError:  # its process or node died: the task is lost with its node
            return None
        return status

    async def task_file(self, task_id: str, name: str, offset: int = 0) -> bytes | None:
        self._require_connection()
        task_path(name)  # refused here, before any node is asked
        actor = await self._lookup_named(TASK_PREFIX + task_id)
        if actor is None:
            return None
        try:
            data: bytes | None = await self._ask(actor.read.remote(name, offset), self.task_read_timeout_s)
        except TimeoutError:
            wait = self.task_read_timeout_s
            raise EngineUnavailable(f"task {task_id}: its node did not answer in {wait:g}s") from None
        except RayError:
            return None
        return data

    async def stop_task(self, task_id: str, grace_s: float = 10.0) -> None:
        self._require_connection()
        actor = await self._lookup_named(TASK_PREFIX + task_id)
        if actor is None:
            return
        try:
            await self._ask(actor.stop.remote(grace_s), grace_s + self.call_timeout_s)
        except (TimeoutError, RayError):
            await self._kill_named(TASK_PREFIX + task_id, actor)  # the backstop: its process dies with it

    async def release_task(self, task_id: str) -> None:
        self._require_connection()
        actor = await self._lookup_named(TASK_PREFIX + task_id)
        if actor is None:
            return
        try:
            await self._ask(actor.release.remote(), 5.0 + self.call_timeout_s)
        except (TimeoutError, RayError):
            pass
        await self._kill_named(TASK_PREFIX + task_id, actor)

    async def close(self, *, stop_replicas: bool = False) -> None:
        if not self._connected:
            return
        if stop_replicas:
            for status in await self.replicas():
                await self.stop(status.replica_id)
        self._connected = False
        if self._owns_connection:
            self._owns_connection = False
            await asyncio.to_thread(ray.shutdown)

    def _require_connection(self) -> None:
        if not self._connected:
            raise EngineUnavailable("the ray backend is not connected: call start() first")

    async def _blocking(self, call: Callable[[], T]) -> T:
        """A blocking Ray call, in a thread; Ray's failures become EngineUnavailable."""
        try:
            return await asyncio.to_thread(call)
        except RayError as exc:
            raise EngineUnavailable(f"the Ray cluster at {self.address} failed: {exc}") from exc

    async def _lookup(self, replica_id: str) -> Any:
        """The live actor of that replica, or None."""
        return await self._lookup_named(ACTOR_PREFIX + replica_id)

    async def _lookup_named(self, name: str) -> Any:
        def get() -> Any:
            try:
                return ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # no actor of that name (never placed, or stopped)
                return None

        return await self._blocking(get)

    async def _ask(self, ref: Any, timeout: float) -> Any:
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout)

    async def _kill(self, replica_id: str, actor: Any) -> None:
        for known in (self._last, self._seen, self._nodes):
            known.pop(replica_id, None)
        await self._kill_named(ACTOR_PREFIX + replica_id, actor)

    async def _kill_named(self, name: str, actor: Any) -> None:
        """Kill the actor for good and wait until its name is free again (bounded)."""
        await self._blocking(lambda: ray.kill(actor, no_restart=True))
        deadline = time.monotonic() + self.call_timeout_s
        while await self._lookup_named(name) is not None:
            if time.monotonic() >= deadline:
                log.warning("the actor %s still has its name after being killed", name)
                return
            await asyncio.sleep(0.1)

    def _record(self, replica_id: str, kind: str, message: str) -> None:
        self._events.append(ClusterEvent(at=time.time(), replica_id=replica_id, kind=kind, message=message))


def _read_adapters(order: ReplicaOrder) -> dict[str, bytes]:
    """The LoRA adapters of the order that this machine has, by path (shipped through Ray's object store
    with the actor's arguments: each replica of a base carries all its fine-tunes, a few MB to tens of MB
    each)."""
    found: dict[str, bytes] = {}
    for path in order.args.lora:
        with contextlib.suppress(OSError):
            found[path] = Path(path).read_bytes()
    return found


def _read_inputs(order: TaskOrder) -> dict[str, bytes]:
    inputs: dict[str, bytes] = {}
    for name in order.inputs:
        data = read_from(Path(order.workdir), name)
        if data is None:
            raise EngineUnavailable(f"task {order.task_id}: its input {name} is missing from {order.workdir}")
        inputs[name] = data
    return inputs


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
