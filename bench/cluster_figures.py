"""Yun on a real two-node Ray cluster: failover time after a node dies, and tokens/s with 1 vs 2 replicas.

Run (about 4-6 minutes; needs PostgreSQL at 127.0.0.1:5432, database `test`, trust auth):
    .venv/bin/python bench/cluster_figures.py [--model qwen|tiny] [--runs 3] [--streams 4] [--duration 20]

What it starts (all torn down by PID at the end): the two-node Ray cluster of tests/support/raycluster.py
(head 127.0.0.2, worker 127.0.0.3, one CPU each, Ray's fast node-failure detection from RAY.md:
health checks every 0.5 s, 3 misses), a fresh PostgreSQL database, one `yun serve --role controller
--cluster ray://...` and one `yun serve --role gateway`. The model (`qwen`: the real default
Qwen2.5-Coder-0.5B-Instruct Q4_K_M; `tiny`: the tests' 2-layer random model) runs as replicas of half a
CPU, one engine thread and two 512-token slots each (as the tests run them).

Figures, each beside the baseline of the same run it compares to:
- failover: SIGKILL of the worker node's process group (a lost machine) -> the first request through the
  gateway that the moved replica served (its llama.cpp `tokens_predicted_total` leaves 0: its engine is a
  new process that only the gateway talks to; polled every 50 ms while two clients send requests).
  Baseline: cold start, from the scale-up request (`POST /admin/deployments/ID/scale`) to the first request
  the new replica served, measured the same way in the same run. Median of `--runs`.
- tokens/s: `--streams` concurrent streams through the gateway for `--duration` s with 1 replica, then 2
  (one per node), each replica one engine thread; ratio 2/1. A second baseline: 1 replica with 2 threads
  (the whole machine to one engine), the fair comparison on 2 cores. The client, the gateway, Ray and
  the engines all share the same 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # tests/support: the Ray cluster, Yun's processes, the models

from tests.support.net import refuses  # noqa: E402
from tests.support.postgres import fresh_database  # noqa: E402
from tests.support.raycluster import WORKER_IP, RayCluster  # noqa: E402
from tests.support.server import KEY_RE, YunServer  # noqa: E402
from tests.support.traffic import Outcome, Traffic  # noqa: E402
from tests.support.yun_ray import YunOnRay, until  # noqa: E402

from yun.store.replicas import RegistryEntry  # noqa: E402

POLL_S = 0.05
PROMPT = "Count from 1 to 300, separated by commas."


def model_file(name: str) -> Path:
    from tests.support.tiny_model import source_qwen_path, tiny_model_path

    return source_qwen_path() if name == "qwen" else tiny_model_path()


def scale(controller: YunServer, model: str, replicas: int) -> float:
    """Ask the controller for `replicas` through its admin API (it acts at once); the moment it was asked."""
    asked = time.monotonic()
    with controller.admin() as c:
        r = c.post(f"/admin/deployments/{model}/scale", json={"replicas": replicas, "max": replicas})
    assert r.status_code == 200, r.text
    return asked


def first_served(yun: YunOnRay, model: str, fresh: Any, what: str) -> tuple[RegistryEntry, float, float]:
    """Poll until the replica `fresh(entries)` picks is ready in the registry and its engine has generated
    tokens: (its entry, when the registry first showed it ready, when it had first served)."""
    entry: RegistryEntry = until(lambda: fresh(yun.replicas(model)), f"{what}: ready in the registry", every_s=POLL_S)
    ready_at = time.monotonic()
    until(lambda: (yun.engine_metric(entry) or 0) > 0 or None, f"{what}: served", every_s=POLL_S)
    return entry, ready_at, time.monotonic()


def failover_run(yun: YunOnRay, cluster: RayCluster, controller: YunServer, model: str) -> dict[str, Any]:
    """Scale 1 -> 2 (cold start), lose the worker node (failover), bring a worker back, scale to 1."""
    before = {e.id for e in yun.replicas(model)}
    asked = scale(controller, model, 2)
    new, new_ready, new_served = first_served(
        yun, model, lambda es: next((e for e in es if e.id not in before and e.state == "ready"), None), "cold start"
    )
    placed = until(lambda: yun.settled(model, 2), "two replicas")
    (lost,) = [e for e in placed if e.endpoint and f"//{WORKER_IP}:" in e.endpoint]
    killed = time.monotonic()
    cluster.kill_worker_node()
    until(lambda: refuses(lost.endpoint or "") or None, "the lost engine is gone", every_s=0.01)
    gone = time.monotonic()
    moved, moved_ready, moved_served = first_served(
        yun,
        model,
        lambda es: next(
            (e for e in es if e.id == lost.id and e.state == "ready" and e.endpoint != lost.endpoint), None
        ),
        "failover",
    )
    cluster.start_worker_node()
    scale(controller, model, 1)
    until(lambda: yun.settled(model, 1), "back to one replica")
    return {
        "killed_at": killed,
        "engine_gone_s": gone - killed,
        "cold_start_s": new_served - asked,
        "cold_start_registry_ready_s": new_ready - asked,
        "new_replica_node_ip": (new.endpoint or "").split("//")[-1].split(":")[0],
        "failover_s": moved_served - killed,
        "failover_registry_ready_s": moved_ready - killed,
        "moved_to": moved.endpoint,
        "moved_restarts": moved.restarts,
    }


def throughput(
    gateway: YunServer, key: str, model: str, streams: int, duration: float, max_tokens: int
) -> dict[str, Any]:
    traffic = Traffic(
        gateway.url, key, model, clients=streams, stream=(True,), max_tokens=max_tokens, prompt=PROMPT
    ).start()
    time.sleep(duration)
    outcomes = traffic.stop()
    ok = [o for o in outcomes if o.error is None]
    span = max(o.ended for o in outcomes) - min(o.started for o in outcomes)
    return {
        "tokens_per_s": sum(o.tokens for o in ok) / span,
        "requests": len(outcomes),
        "failed": len(outcomes) - len(ok),
        "span_s": span,
    }


def failures(outcomes: list[Outcome], runs: list[dict[str, Any]]) -> list[str]:
    """Each failed request, when it was sent and ended from the nearest kill of a node, and whether it was
    under way when that node's engine died (sent before it was gone, still open at the kill)."""
    out = []
    for o in outcomes:
        if o.error is None:
            continue
        run = min(runs, key=lambda r: abs(o.started - r["killed_at"]))
        sent, ended = o.started - run["killed_at"], o.ended - run["killed_at"]
        under_way = sent <= run["engine_gone_s"] and ended >= 0
        kind = "stream" if o.stream else "non-stream"
        when = f"sent {sent:+.2f}s, ended {ended:+.2f}s from a kill (engine gone at +{run['engine_gone_s']:.2f}s)"
        out.append(f"{'under way' if under_way else 'NOT under way'}: {kind} {when}: {o.error}")
    return out


def pressure() -> str:
    """The kernel's CPU pressure (`some` line): how much others compete for the cores."""
    return Path("/proc/pressure/cpu").read_text().splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("qwen", "tiny"), default="qwen")
    parser.add_argument("--runs", type=int, default=3, help="failover runs (median reported)")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams for tokens/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per tokens/s measurement")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model, path = args.model, model_file(args.model)
    load = [os.getloadavg()[0]]
    pressures = [pressure()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cluster = RayCluster()
    runs: list[dict[str, Any]] = []
    rates: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="yun-bench-") as tmp, fresh_database() as database:
        servers: list[YunServer] = []
        try:
            cluster.start()
            yun = YunOnRay(Path(tmp), database, cluster)
            controller = yun.server("controller", "controller", server_class=YunServer)
            servers.append(controller)
            controller.start()
            gateway = yun.server("gateway", "gateway", server_class=YunServer, admin_key=controller.admin_key)
            servers.append(gateway)
            gateway.start()
            print(f"deploying {model} ({path.name}) on Ray at {cluster.address}", file=sys.stderr)
            yun.deploy(controller, model, path, replicas=1)
            key = KEY_RE.findall(controller.yun("keys", "create", "bench"))[0]
            tput = (gateway, key, model, args.streams, args.duration, args.max_tokens)
            rates["1 replica x 1 thread"] = throughput(*tput)
            # Two clients keep both replicas busy (least outstanding work) during every failover run.
            clients = Traffic(gateway.url, key, model, clients=2, max_tokens=4).start()
            try:
                for run in range(args.runs):
                    runs.append(failover_run(yun, cluster, controller, model))
                    print(f"run {run + 1}: {json.dumps(runs[-1])}", file=sys.stderr)
            finally:
                outcomes = clients.stop()
            scale(controller, model, 2)
            placed = until(lambda: yun.settled(model, 2), "two replicas")
            assert len({e.node for e in placed}) == 2, f"both replicas on one node: {placed}"
            rates["2 replicas x 1 thread (one per node)"] = throughput(*tput)
            scale(controller, model, 1)
            until(lambda: yun.settled(model, 1), "one replica")
            controller.yun("deployments", "update", model, "--threads", "2")  # generation 3
            until(lambda: [e for e in yun.settled(model, 1) or [] if e.generation == 3] or None, "2 threads")
            rates["1 replica x 2 threads"] = throughput(*tput)
        finally:
            for server in servers:
                server.kill9()
            cluster.stop()
    load.append(os.getloadavg()[0])
    pressures.append(pressure())
    report(args, runs, rates, outcomes, {"loadavg": load, "cpu_pressure": pressures}, stamp)


def report(
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    rates: dict[str, dict[str, Any]],
    outcomes: list[Outcome],
    machine: dict[str, list[Any]],
    stamp: str,
) -> None:
    lines = {
        "failover_s": "failover (worker node SIGKILL -> first request served by the moved replica)",
        "failover_registry_ready_s": "  of which until the registry showed it ready on the head node",
        "cold_start_s": "baseline, cold start (scale-up -> first request served by the new replica)",
    }
    median = {k: statistics.median(r[k] for r in runs) for k in lines}
    print(f"\nmodel {args.model}; Ray fast node-failure detection (health check 0.5 s x 3); {len(runs)} runs, median")
    for k, text in lines.items():
        print(f"  {text}: {median[k]:.2f} s")
    print(f"  failover - cold start: {median['failover_s'] - median['cold_start_s']:+.2f} s")
    failed = failures(outcomes, runs)
    print(f"  requests by two clients during all runs: {len(outcomes)}, failed: {len(failed)}")
    for error in failed:
        print(f"    {error[:220]}")
    one = rates["1 replica x 1 thread"]["tokens_per_s"]
    print(f"\ntokens/s through the gateway, {args.streams} concurrent streams, {args.duration:g} s each:")
    for name, rate in rates.items():
        print(f"  {name:38s} {rate['tokens_per_s']:8.1f}  ({rate['tokens_per_s'] / one:.2f}x; {rate['failed']} failed)")
    load, pressures = machine["loadavg"], machine["cpu_pressure"]
    print(f"1-minute load average at start/end: {load[0]:.2f}/{load[1]:.2f}; CPU pressure at start/end:")
    print("\n".join(f"  {p}" for p in pressures))
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    path = results / f"cluster_figures-{stamp}.json"
    meta = {"when": stamp, "cpus": os.cpu_count(), **machine, **vars(args)}
    body = {"meta": meta, "median": median, "runs": runs, "tokens_per_s": rates, "failed": failed}
    path.write_text(json.dumps(body, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
