"""Yun on a real two-node Ray cluster, end to end with real processes (issue 11): an active controller and
a standby (`--cluster ray://HEAD:PORT`) and one gateway on PostgreSQL, the tiny model's deployment as Ray
actors on both nodes, the official `openai` client sending requests (streamed and not) throughout.

- Placed: the deployment's two replicas run on different nodes, and the gateway serves both.
- The active controller is SIGKILLed: the standby takes over and adopts the running actors (same replica
  ids, same named actors, none added) and no request fails meanwhile.
- The worker node is SIGKILLed (a lost machine): Ray restarts its replica's actor on the head node, the
  registry shows it there with a new endpoint, the gateway routes to it. Only requests that were under way
  when the node died may fail; none sent once its engine was gone does (a replica that refuses a request
  before any output hands it to another one).
- Every request is billed exactly once, to the nanodollar (the ledger audit, on PostgreSQL).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from tests.reliability.conftest import MODEL, MoneyServer, audit_ledger
from tests.support.net import refuses
from tests.support.raycluster import HEAD_IP, WORKER_IP, RayCluster
from tests.support.server import Health, YunServer
from tests.support.tiny_model import tiny_model_path
from tests.support.traffic import Outcome, Traffic
from tests.support.yun_ray import YunOnRay, until
from yun.cluster.backends.ray import ACTOR_PREFIX, NAMESPACE
from yun.store.replicas import RegistryEntry

pytestmark = pytest.mark.reliability

TAKEN_OVER = "this process is the active controller"
"""What a controller logs when it becomes the active one (api/lifespan.py)."""


def _host(entry: RegistryEntry) -> str | None:
    return None if entry.endpoint is None else urlsplit(entry.endpoint).hostname


def _serving(n: int) -> Any:
    def ready(health: Health) -> bool:
        return bool(health.get("models", {}).get(MODEL, {}).get("healthy_replicas") == n)

    return ready


def _more_successes(traffic: Traffic, after: float, n: int) -> bool | None:
    """True once `n` requests sent after `after` have succeeded (the clients keep going meanwhile)."""
    return True if sum(o.error is None and o.started > after for o in traffic.outcomes()) >= n else None


def _unsettled(database: str) -> int:
    engine = create_engine(database)
    try:
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM reservations WHERE settled_at IS NULL")).scalar_one())
    finally:
        engine.dispose()


def _actors(ids: set[str]) -> list[str]:
    return sorted(ACTOR_PREFIX + replica_id for replica_id in ids)


def test_yun_on_ray_keeps_serving_when_its_controller_and_then_a_node_die(
    tmp_path: Path, pg_url: str, ray_cluster: RayCluster
) -> None:
    yun = YunOnRay(tmp_path, pg_url, ray_cluster)
    active = yun.server("controller-a", "controller", server_class=MoneyServer)
    servers: list[YunServer] = [active]
    traffic: Traffic | None = None
    worker_lost = False
    try:
        # -- a. two replicas, one per node, served through the gateway -------------------------------
        active.start()
        placed = yun.deploy(active, MODEL, tiny_model_path(), replicas=2)
        ids = {e.id for e in placed}
        assert {_host(e) for e in placed} == {HEAD_IP, WORKER_IP}
        assert len({e.node for e in placed}) == 2  # two Ray nodes
        assert ray_cluster.named_actors(NAMESPACE) == _actors(ids)  # the old generation's is gone
        assert all(yun.engine_metric(e) == 0 for e in placed)  # nothing generated before the gateway asks

        standby = yun.server("controller-b", "controller", server_class=YunServer, admin_key=active.admin_key)
        gateway = yun.server(
            "gateway", "gateway", server_class=MoneyServer, ready=_serving(2), admin_key=active.admin_key
        )
        servers += [standby, gateway]
        standby.start()
        gateway.start()
        assert TAKEN_OVER not in standby.stderr()
        active.set_price()
        key = active.new_key(active.new_org("ray", "100"))
        traffic = clients = Traffic(gateway.url, key, MODEL, clients=2).start()
        # Two clients at a time keep both replicas busy (least outstanding work): both generate tokens.
        until(lambda: all((yun.engine_metric(e) or 0) > 0 for e in placed) or None, "both replicas served")

        # -- b. SIGKILL the active controller: the standby adopts the actors --------------------------
        active.kill9()
        until(lambda: TAKEN_OVER in standby.stderr() or None, "the standby took over")
        took_over = time.monotonic()
        until(lambda: _more_successes(clients, took_over, 10), "requests succeeded after the take-over")
        adopted = yun.replicas(MODEL)
        assert {e.id for e in adopted} == ids
        assert {(e.id, e.endpoint, e.state) for e in adopted} == {(e.id, e.endpoint, "ready") for e in placed}
        assert ray_cluster.named_actors(NAMESPACE) == _actors(ids)  # no new actor, no duplicate
        failed = [o for o in clients.outcomes() if o.error is not None]
        assert failed == [], f"requests failed while the controller changed: {failed}"

        # -- c. SIGKILL the worker node: its replica comes back on the head node ------------------------
        (lost,) = [e for e in placed if _host(e) == WORKER_IP]
        lost_endpoint = lost.endpoint
        assert lost_endpoint is not None
        killed = time.monotonic()
        ray_cluster.kill_worker_node()
        worker_lost = True
        until(lambda: refuses(lost_endpoint) or None, "the lost node's engine stopped answering")
        gone = time.monotonic()

        def back() -> RegistryEntry | None:
            """The lost replica once the registry shows it ready somewhere else (until the controller's
            next pass the registry still shows it where it was)."""
            now = [e for e in yun.replicas(MODEL) if e.id == lost.id]
            return next((e for e in now if e.state == "ready" and e.endpoint != lost.endpoint), None)

        moved = until(back, "the lost replica is ready again elsewhere")
        assert _host(moved) == HEAD_IP and moved.node != lost.node and moved.restarts >= 1
        # Its engine is a new process that has generated nothing but what the gateway sent it.
        until(lambda: (yun.engine_metric(moved) or 0) > 0 or None, "the gateway routed to the moved replica")
        routed = time.monotonic()
        until(lambda: _more_successes(clients, routed, 10), "requests succeeded after the move")
        traffic = None
        outcomes = clients.stop()
        assert {e.id for e in yun.replicas(MODEL)} == ids
        assert ray_cluster.named_actors(NAMESPACE) == _actors(ids)  # restarted, not duplicated

        failed = [o for o in outcomes if o.error is not None]
        under_way = [o for o in failed if o.started < gone and o.ended >= killed]
        print(_observed(outcomes, failed, killed, gone))
        assert failed == under_way, f"requests sent after the lost engine was gone failed: {failed}"
        assert len(under_way) <= 2, "each of the two clients had at most one request under way"

        # -- money: each request billed once, balance == ledger -----------------------------------------
        until(lambda: _unsettled(pg_url) == 0 or None, "every request is settled")
        audit = audit_ledger(pg_url)
        assert len(audit.records) == len(outcomes), "one usage record per request sent"
        ok = [o for o in outcomes if o.error is None]
        billed_ok = [r for r in audit.records.values() if r["status"] == "ok"]
        assert len(billed_ok) == len(ok)
        assert sum(r["completion_tokens"] for r in billed_ok) == sum(o.tokens for o in ok)

        # -- the controller stops Ray actors when their deployment goes -----------------------------------
        standby.yun("deployments", "delete", MODEL)
        until(lambda: ray_cluster.named_actors(NAMESPACE) == [] or None, "the deployment's actors are gone")
    finally:
        if traffic is not None:
            traffic.stop()
        for server in servers:
            server.kill9()
        ray_cluster.named_actors(NAMESPACE, kill_prefix=ACTOR_PREFIX)  # whatever a failed run left behind
        if worker_lost:
            ray_cluster.start_worker_node()  # the next tests of the session get two nodes again


def _observed(outcomes: list[Outcome], failed: list[Outcome], killed: float, gone: float) -> str:
    """What the clients saw around the node's loss, for the report (`pytest -s`)."""
    after = [o for o in outcomes if o.started >= gone]
    lines = [
        f"{len(outcomes)} requests, {len(failed)} failed; {len(after)} sent after the lost engine was gone "
        f"({gone - killed:.2f}s after the SIGKILL), {sum(o.error is not None for o in after)} of them failed"
    ]
    lines += [
        f"  failed: {'stream' if o.stream else 'non-stream'} sent {o.started - killed:+.2f}s, "
        f"ended {o.ended - killed:+.2f}s from the SIGKILL: {o.error}"
        for o in failed
    ]
    return "\n".join(lines)
