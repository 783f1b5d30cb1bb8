"""A real two-node Ray cluster on this machine, for the `ray` cluster backend's tests (see RAY.md).

The head runs on 127.0.0.2 (resource `node_a`), the worker on 127.0.0.3 (resource `node_b`), one CPU
each, the smallest object store Ray accepts and a short temp dir (Ray's Unix socket paths are limited to
107 bytes). Failure detection is tuned from ~15 s down to ~2 s so losing a node is quick to observe.

Every node leader is a `ray start --block` in its own session (its PGID is its PID) that dies with the
test run (PR_SET_PDEATHSIG). Teardown is by PID and process group only, never `ray stop` (which kills
every Ray process on the machine by name, other people's too). `kill_worker_node()` is losing a machine:
SIGKILL to the worker's whole process group; `start_worker_node()` brings a fresh one back.
`named_actors()` and `kill_named_actors()` look at the cluster from a short-lived driver process of their
own, so the caller (a test, a benchmark) never becomes a Ray driver itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.net import free_port

__all__ = ["HEAD_IP", "WORKER_IP", "RayCluster"]

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
_OBJECT_STORE_BYTES = 78_643_200  # 75 MiB, the smallest Ray accepts
_STARTED = "Ray runtime started"
_PR_SET_PDEATHSIG = 1

ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # else SIGTERM waits a 30 s drain
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _descendants(roots: set[int]) -> set[int]:
    """Every live process below `roots` (Ray's workers run in process groups of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# A driver of its own: lists the named actors of a namespace and kills those whose name starts with a prefix.
_NAMED_ACTORS = """
import json, sys
import ray
address, ip, namespace, kill_prefix = sys.argv[1:5]
ray.init(address=address, _node_ip_address=ip, namespace=namespace, log_to_driver=False, logging_level="ERROR")
names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace)
for name in names:
    if kill_prefix and name.startswith(kill_prefix):
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
print(json.dumps(names))
"""


class RayCluster:
    """Two Ray nodes on loopback addresses. `address` is the head's GCS (`127.0.0.2:PORT`) for `ray.init`
    (with `_node_ip_address=HEAD_IP`) or a `RayBackend`."""

    def __init__(self, start_timeout_s: float = 60.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths max 107 bytes
        self.port = free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.start_timeout_s = start_timeout_s
        self.head: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._workers_started = 0
        self._all_leaders: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        self.head = self._launch(
            "head",
            [
                ray, "start", "--block", "--head", f"--port={self.port}", f"--node-ip-address={HEAD_IP}",
                "--num-cpus=1", '--resources={"node_a":1}', f"--object-store-memory={_OBJECT_STORE_BYTES}",
                f"--temp-dir={self.root / 'a'}", "--include-dashboard=false", "--no-monitor",
                "--include-log-monitor=false", "--disable-usage-stats",
            ]
            # With grpcio installed (ray[client]), the head also starts a Ray Client server on fixed port
            # 10001; without it, the flag itself is refused.
            + (["--ray-client-server-port=0"] if importlib.util.find_spec("grpc") else []),
        )  # fmt: skip
        self.start_worker_node()

    def start_worker_node(self) -> None:
        """Start the worker node (again, after `kill_worker_node()`: a new machine joins)."""
        ray = str(Path(sys.executable).parent / "ray")
        self._workers_started += 1
        self.worker = self._launch(
            f"worker{self._workers_started}",
            [
                ray, "start", "--block", f"--address={self.address}", f"--node-ip-address={WORKER_IP}",
                "--num-cpus=1", '--resources={"node_b":1}', f"--object-store-memory={_OBJECT_STORE_BYTES}",
                f"--temp-dir={self.root / 'b'}", "--include-log-monitor=false", "--disable-usage-stats",
            ],
        )  # fmt: skip

    def _launch(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out_path = self.root / f"{name}.out"
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **ENV},
                start_new_session=True,  # PGID == PID: the whole node is one kill away
                preexec_fn=_die_with_parent,
            )
        self._all_leaders.append(proc)
        deadline = time.monotonic() + self.start_timeout_s
        while _STARTED not in out_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = out_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"ray node {name} did not start (exit code {proc.returncode}):\n{log}")
            time.sleep(0.1)
        return proc

    def kill_worker_node(self) -> None:
        """Lose the worker machine: SIGKILL its node's whole process group (raylet, its workers die with it)."""
        assert self.worker is not None
        # A lost machine loses every process: also Ray's workers, which run in process groups of their own.
        pids = _descendants({self.worker.pid})
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.worker.wait(10)

    def named_actors(self, namespace: str, *, kill_prefix: str = "") -> list[str]:
        """The names of the live named actors in `namespace` (a restarting one counts: it still holds its
        name); with `kill_prefix`, those whose name starts with it are killed for good (after listing)."""
        done = subprocess.run(
            [sys.executable, "-c", _NAMED_ACTORS, self.address, HEAD_IP, namespace, kill_prefix],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **ENV},
        )
        assert done.returncode == 0, f"listing Ray's named actors failed: {done.stderr[-3000:]}"
        names: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
        return names

    def stop(self) -> None:
        """Stop every process this cluster started, by PID and process group, then remove its files."""
        leaders = [p for p in self._all_leaders if p.poll() is None]
        pids = _descendants({p.pid for p in leaders})
        for proc in leaders:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in leaders:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        for proc in leaders:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
