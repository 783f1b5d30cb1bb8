"""Yun's control plane on a real Ray cluster, as the reliability tier and bench/cluster_figures.py run it.

Controllers (`yun serve --role controller --cluster ray://HEAD:PORT`) and gateways (`--role gateway`)
share one PostgreSQL database and one secrets key. Every replica asks Ray for half a CPU: on the two
one-CPU nodes of tests/support/raycluster.py a deployment's two replicas then spread one per node, and
the replica of a lost node still fits on the other one, beside its sibling. Engines run one thread with
two small slots (the machine has 2 cores).

A deployment is created the way an operator does it: `yun models add` (the default deployment, one
replica of one CPU), `yun deployments update --cpus 0.5` (a rolling update), `yun deployments scale`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from cryptography.fernet import Fernet

from tests.support.raycluster import ENV as RAY_ENV
from tests.support.raycluster import RayCluster
from tests.support.registry import registry_of
from tests.support.server import Health, YunServer, answers
from yun.store.replicas import RegistryEntry

__all__ = ["REPLICA_SHAPE", "YunOnRay", "until"]

REPLICA_CPUS = "0.5"
REPLICA_SHAPE = "cpu0.5"
WAIT_S = 240.0  # bound on every wait here (replica loads on a busy 2-core machine); never a measured time

T = TypeVar("T")
S = TypeVar("S", bound=YunServer)


def until(probe: Callable[[], T | None], what: str, timeout: float = WAIT_S, every_s: float = 0.2) -> T:
    """Poll `probe` until it returns something other than None (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, f"waited {timeout:g}s in vain until {what}"
        time.sleep(every_s)
    return found


class YunOnRay:
    """Controllers and gateways of one Yun on `cluster`, over the PostgreSQL database at `database`."""

    def __init__(self, root: Path, database: str, cluster: RayCluster) -> None:
        self.root = root
        self.database = database
        self.cluster = cluster
        self.secrets_key = Fernet.generate_key().decode()  # every process sharing the database has it
        self.env = {
            **RAY_ENV,
            "YUN_SECRETS__KEY": self.secrets_key,
            "YUN_ENGINE__THREADS": "1",
            "YUN_ENGINE__PARALLEL": "2",
            "YUN_ENGINE__CONTEXT_PER_SLOT": "512",
            "YUN_ENGINE__DRAIN_S": "1",
        }

    def server(
        self,
        name: str,
        role: str,
        *,
        server_class: type[S],
        ready: Callable[[Health], bool] = answers,
        admin_key: str | None = None,
    ) -> S:
        """A `yun serve --role ROLE` with its own data dir (controllers connect to the Ray cluster)."""
        args = ["--role", role, "--no-default-models"]
        if role != "gateway":
            args += ["--cluster", f"ray://{self.cluster.address}"]
        return server_class(
            self.root,
            data_dir=self.root / name,
            database=self.database,
            args=args,
            env=self.env,
            ready=ready,
            admin_key=admin_key,
        )

    # -- the replica registry -------------------------------------------------------------------------
    def replicas(self, deployment: str) -> list[RegistryEntry]:
        """The registry's replicas of `deployment` that are not stopped, oldest first."""
        return registry_of(deployment, self.database, secrets_key=self.secrets_key)

    def settled(self, deployment: str, n: int) -> list[RegistryEntry] | None:
        """The deployment's replicas once exactly `n` hold compute, all ready, of the half-CPU shape."""
        live = [e for e in self.replicas(deployment) if e.state != "failed"]
        ok = len(live) == n and all(e.state == "ready" and e.endpoint and e.shape == REPLICA_SHAPE for e in live)
        return live if ok else None

    def deploy(self, admin: YunServer, model: str, path: Path, replicas: int) -> list[RegistryEntry]:
        """Add `model` (its weights at `path`) and run `replicas` half-CPU replicas of its deployment."""
        admin.yun("models", "add", model, "--file", str(path))
        until(lambda: [e for e in self.replicas(model) if e.state == "ready"] or None, f"{model} has a replica")
        admin.yun("deployments", "update", model, "--cpus", REPLICA_CPUS)
        # One at a time: the new generation's first replica goes beside the old one, which then drains;
        # scaling only after that keeps Ray from filling one node while the old replica holds the other.
        until(lambda: self.settled(model, 1), f"{model} rolled over to {REPLICA_SHAPE}")
        return self.scale(admin, model, replicas)

    def scale(self, admin: YunServer, model: str, replicas: int) -> list[RegistryEntry]:
        admin.yun("deployments", "scale", model, str(replicas), "--max", str(replicas))
        return until(lambda: self.settled(model, replicas), f"{model} runs {replicas} ready replica(s)")

    # -- an engine, reached as a gateway reaches it -----------------------------------------------------
    @staticmethod
    def engine_metric(entry: RegistryEntry, name: str = "llamacpp:tokens_predicted_total") -> float | None:
        """A counter of the replica's llama.cpp `/metrics` (with its secret), or None if it does not answer."""
        if entry.endpoint is None:
            return None
        try:
            r = httpx.get(
                entry.endpoint + "/metrics",
                headers={"Authorization": f"Bearer {entry.secret}"},
                trust_env=False,
                timeout=5,
            )
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        found = re.search(rf"^{re.escape(name)}\s+(\S+)$", r.text, re.MULTILINE)
        return None if found is None else float(found.group(1))
