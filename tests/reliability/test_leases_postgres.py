"""Two real `yun serve` gateways on one PostgreSQL database (issue 10, item 1): a live gateway's open hold
is never settled by the other, however many recovery rounds the other runs; once the gateway is killed,
its hold is settled (at its last recorded progress) only after its lease has expired.

A, started first, is the active controller and runs the one replica of the tiny model; B stands by as
controller and routes to that replica from the registry (both share one secrets key, as gateways sharing
a database must). The stream through gateway B is held open deterministically by stopping the replica
(SIGSTOP) before it starts. Leases are short (2 s) and
recovery runs every second, so every wait below is a bounded poll on the database.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from tests.reliability.conftest import MODEL, PRICE
from tests.reliability.test_second_serve import StreamInThread, open_hold, replica_pid
from tests.support.server import Health, YunServer, answers
from tests.support.tiny_model import tiny_model_path

pytestmark = pytest.mark.reliability

LEASE_S = 2.0
SECRETS_KEY = Fernet.generate_key().decode()  # one per test run, shared by every gateway on the database
START_TIMEOUT_S = 240.0
WAIT_S = 120.0  # bound on every poll below; never a measured time


def _model_ready(health: Health) -> bool:
    return bool(health.get("models", {}).get(MODEL, {}).get("healthy_replicas") == 1)


def _gateway(
    root: Path, name: str, database: str, ready: Callable[[Health], bool], *, admin_key: str | None = None
) -> YunServer:
    """A gateway on the shared database, with its own data dir (its logs) and gateway id."""
    return YunServer(
        root,
        data_dir=root / name,
        database=database,
        args=["--no-default-models"],
        env={
            "YUN_ENGINE__PARALLEL": "2",
            "YUN_ENGINE__CONTEXT_PER_SLOT": "512",
            "YUN_ENGINE__HEALTH_INTERVAL_S": "0.5",  # recovery runs every 2 health intervals: each second
            "YUN_SERVER__LEASE_S": str(LEASE_S),
            "YUN_BILLING__PROGRESS_INTERVAL_S": "0.2",
            "YUN_SERVER__GATEWAY_ID": name,
            "YUN_SECRETS__KEY": SECRETS_KEY,
        },
        ready=ready,
        start_timeout_s=START_TIMEOUT_S,
        admin_key=admin_key,
    )


def _row(database: str, sql: str, **params: Any) -> Any:
    engine = create_engine(database)
    try:
        with engine.connect() as c:
            return c.execute(text(sql), params).first()
    finally:
        engine.dispose()


def test_a_live_gateways_hold_is_never_recovered_a_killed_ones_only_after_its_lease(
    tmp_path: Path, pg_url: str
) -> None:
    a = _gateway(tmp_path, "gw-a", pg_url, answers)  # no model yet
    gateways = [a]
    try:
        a.start()  # asserts the one bootstrap key for the database
        admin = a.admin_key
        assert admin is not None
        # Over A's admin API; A's controller deploys it, both gateways route to it.
        a.yun("models", "add", MODEL, "--file", str(tiny_model_path()))
        b = _gateway(tmp_path, "gw-b", pg_url, _model_ready, admin_key=admin)
        gateways.append(b)
        b.start()  # asserts that B prints no bootstrap key: one for the database
        a.wait_until(_model_ready)
        with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {admin}"}, trust_env=False) as c:
            assert c.put(f"/admin/prices/{MODEL}", json=PRICE).status_code == 200
            org = c.post("/admin/orgs", json={"name": "t"}).json()["id"]
            assert c.post(f"/admin/orgs/{org}/credits", json={"amount": "100"}).status_code == 201
            key = c.post(f"/admin/orgs/{org}/keys", json={"name": "k", "role": "member"}).json()["secret"]

        assert a.proc is not None and b.proc is not None
        replica = replica_pid(a.proc.pid)
        os.kill(replica, signal.SIGSTOP)  # B's request takes its hold, then waits for its engine
        stream = StreamInThread(b.url, key, 300)
        request_id = open_hold(_pg_open_holds(pg_url), org)
        owner, taken_at = _row(
            pg_url, "SELECT gateway_id, created_at FROM reservations WHERE request_id = :r", r=request_id
        )

        # Both alive: B keeps renewing; wait until B's lease has been renewed past two full lease periods
        # after the hold was taken. A ran its recovery about once a second meanwhile: B's hold stays open.
        deadline = time.monotonic() + WAIT_S
        while True:
            row = _row(pg_url, "SELECT heartbeat_at FROM gateway_instances WHERE id = :g", g=owner)
            assert row is not None, "the live gateway's lease was taken for dead"
            beat = row[0]
            if (beat - taken_at).total_seconds() > 2 * LEASE_S:
                break
            assert time.monotonic() < deadline, "gateway B stopped renewing its lease"
            time.sleep(0.1)
        assert _row(pg_url, "SELECT settled_at FROM reservations WHERE request_id = :r", r=request_id)[0] is None

        b.kill9()
        expires_at = _row(pg_url, "SELECT expires_at FROM gateway_instances WHERE id = :g", g=owner)[0]
        deadline = time.monotonic() + WAIT_S
        while (
            settled := _row(pg_url, "SELECT * FROM reservations WHERE request_id = :r", r=request_id)
        ).settled_at is None:
            assert time.monotonic() < deadline, "A never recovered the dead gateway's hold"
            time.sleep(0.1)
        assert stream.join() is None and stream.error is not None  # the client saw the kill
        assert settled.settled_at >= expires_at  # never before B's lease ran out
        usage = _row(pg_url, "SELECT status, completion_tokens FROM usage_records WHERE request_id = :r", r=request_id)
        assert (usage.status, usage.completion_tokens) == ("interrupted", settled.progress_completion_tokens)
        deadline = time.monotonic() + WAIT_S  # and its lease row goes, once it owns nothing open
        while _row(pg_url, "SELECT count(*) FROM gateway_instances WHERE id = :g", g=owner)[0] != 0:
            assert time.monotonic() < deadline, "the dead gateway's lease row was never forgotten"
            time.sleep(0.1)
        balance = _row(pg_url, "SELECT balance, held FROM balances WHERE org_id = :o", o=org)
        ledger = _row(pg_url, "SELECT sum(amount) FROM ledger_entries WHERE org_id = :o", o=org)[0]
        assert (balance.balance, balance.held) == (ledger, 0)
    finally:
        for gateway in gateways:
            gateway.kill9()


def _pg_open_holds(database: str) -> Callable[[str], list[Any]]:
    def query(org: str) -> list[Any]:
        engine = create_engine(database)
        try:
            with engine.connect() as c:
                sql = "SELECT request_id FROM reservations WHERE org_id = :o AND settled_at IS NULL"
                return list(c.execute(text(sql), {"o": org}).all())
        finally:
            engine.dispose()

    return query
