"""Reliability tier: real `yun serve` processes on 127.0.0.1, pushed hard, killed with SIGKILL, and audited.

`ReliabilityServer` is the shared `yun serve` launcher (tests/support/server.py) with the tiny model:
killed and started again on the same data dir and port, the restarted server holds the data dir's
lock, so no other gateway can be alive on its SQLite database, and its crash recovery settles what the
dead process left open before it serves.
`MoneyServer` is any `yun serve` of the tier with the money helpers (prices, orgs, keys) its tests share.
`audit_ledger` reads the database directly (the SQLite file, or a PostgreSQL URL) and checks the money
invariants of ARCHITECTURE.md exactly, to the nanodollar, across every organization in the database.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import _postgres_database
from tests.support.registry import engine_access
from tests.support.server import Health, YunServer, answers
from tests.support.tiny_model import tiny_model_path

GATEWAY_ID = "reliability-gw"
MODEL = "tiny"
NANO = 1_000_000_000
# USD per 1M tokens: an input token costs $0.001 (1e6 nanodollars), an output token $0.002. Cached input is
# priced like input (no cached_input given), so a charge does not depend on the engine's prompt cache.
PRICE = {"input": "1000", "output": "2000"}
INPUT_NANO, OUTPUT_NANO = 1_000_000, 2_000_000
START_TIMEOUT_S = 240.0  # replica load on a busy 2-core machine; only a bound, never a measured time
PROGRESS_INTERVAL_S = 0.5
"""How often the servers record a running stream's progress on its hold. Half the 1 s after which the
SIGKILL test expects a cut stream to be billed something, so that a client reading late (its loop is
blocked while it kills the server) cannot make a stream look longer than the gateway streamed it."""


def usd(nanodollars: int) -> str:
    """Nanodollars as the exact decimal USD string the admin API takes."""
    return f"{nanodollars // NANO}.{nanodollars % NANO:09d}"


def expected_cost(prompt_tokens: int, completion_tokens: int) -> int:
    return prompt_tokens * INPUT_NANO + completion_tokens * OUTPUT_NANO


class MoneyServer(YunServer):
    """A `yun serve` with the helpers the tier's money tests share (all through the admin and org APIs)."""

    def set_price(self) -> None:
        with self.admin() as c:
            r = c.put(f"/admin/prices/{MODEL}", json=PRICE)
        assert r.status_code == 200, r.text

    def new_org(self, name: str, credit_usd: str | None) -> str:
        with self.admin() as c:
            r = c.post("/admin/orgs", json={"name": name})
            assert r.status_code == 201, r.text
            org_id: str = r.json()["id"]
            if credit_usd is not None:
                r = c.post(f"/admin/orgs/{org_id}/credits", json={"amount": credit_usd})
                assert r.status_code == 201, r.text
        return org_id

    def new_key(self, org_id: str, name: str = "k") -> str:
        with self.admin() as c:
            r = c.post(f"/admin/orgs/{org_id}/keys", json={"name": name, "role": "member"})
        assert r.status_code == 201, r.text
        secret: str = r.json()["secret"]
        return secret

    def org_get(self, key: str, path: str) -> Any:
        r = httpx.get(
            f"{self.url}/v1/organization/{path}",
            headers={"Authorization": f"Bearer {key}"},
            trust_env=False,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()


class ReliabilityServer(MoneyServer):
    """A `yun serve` with the tiny model and the reliability tier's settings, on its own SQLite database."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        super().__init__(
            root,
            port=port,
            args=["--no-default-models"],
            env={
                "YUN_ENGINE__PARALLEL": "4",
                "YUN_ENGINE__CONTEXT_PER_SLOT": "512",
                "YUN_SERVER__GATEWAY_ID": GATEWAY_ID,
                "YUN_BILLING__PROGRESS_INTERVAL_S": str(PROGRESS_INTERVAL_S),
            },
            ready=answers,  # the model is added after the first start
            start_timeout_s=START_TIMEOUT_S,
        )
        self.model_registered = False

    def start(self) -> None:
        """Start, add the tiny model on the first start, and wait for its one healthy replica."""
        super().start()
        if not self.model_registered:
            self.register_model()
        self.wait_until(_tiny_model_ready)

    def register_model(self) -> None:
        """`yun models add` over HTTP, as an operator would, against the running server (which deploys it
        within seconds): the CLI never opens the database behind a server's back."""
        self.yun("models", "add", MODEL, "--file", str(tiny_model_path()))
        self.model_registered = True

    def engine(self) -> tuple[str, dict[str, str]]:
        """The current replica's own llama.cpp HTTP server, and the headers it demands (its secret)."""
        return engine_access(self.data_dir, MODEL)


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (skipped, with the reason, where none is running)."""
    yield from _postgres_database()


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


def role_server(
    root: Path,
    name: str,
    role: str,
    database: str,
    args: Sequence[str],
    env: dict[str, str],
    ready: Callable[[Health], bool],
    admin_key: str | None = None,
) -> YunServer:
    """One `yun serve --role ROLE` of a scale-out installation on `database`, with its own data dir
    (`root/name`) and no default models; `args` adds e.g. `--redis URL`."""
    return YunServer(
        root,
        data_dir=root / name,
        database=database,
        args=["--role", role, *args, "--no-default-models"],
        env=env,
        ready=ready,
        admin_key=admin_key,
    )


def _tiny_model_ready(health: Health) -> bool:
    model = health.get("models", {}).get(MODEL, {})
    return health.get("status") == "ok" and model.get("healthy_replicas") == 1


@pytest.fixture
def yun_server(tmp_path: Path) -> Iterator[ReliabilityServer]:
    """A fresh, priced `yun serve` with the tiny model, stopped (and reaped) after the test."""
    server = ReliabilityServer(tmp_path)
    try:
        server.start()
        server.set_price()
        yield server
    finally:
        server.stop()


# -- the ledger audit ----------------------------------------------------------------------------
@dataclass
class Audit:
    """One consistent snapshot of the money tables (all amounts in nanodollars)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """usage_records by request_id"""
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    """org_id -> (balance, held)"""
    credits: dict[str, int] = field(default_factory=dict)
    """org_id -> sum of every non-charge ledger entry (grants, top-ups, ...)"""

    def of_org(self, org_id: str) -> dict[str, dict[str, Any]]:
        return {rid: r for rid, r in self.records.items() if r["org_id"] == org_id}


def _rows(c: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in c.execute(sql)]


_MONEY_TABLES = (
    "SELECT * FROM usage_records",
    "SELECT * FROM reservations",
    "SELECT org_id, balance, held FROM balances",
    "SELECT org_id, kind, amount, reference FROM ledger_entries",
    "SELECT org_id, SUM(requests) AS n, SUM(prompt_tokens) AS p, SUM(completion_tokens) AS t, "
    "SUM(training_tokens) AS trained, SUM(cost) AS cost FROM usage_rollups GROUP BY org_id",
    "SELECT charge_ref, SUM(seconds) AS seconds, SUM(price) AS price FROM compute_usage"
    " WHERE charge_ref IS NOT NULL GROUP BY charge_ref",
)


def _snapshot(db: Path | str) -> list[list[dict[str, Any]]]:
    """The rows of every `_MONEY_TABLES` query, all read in one snapshot: of the SQLite file `db`, or of
    the database at the URL `db` (PostgreSQL, in one REPEATABLE READ transaction)."""
    if isinstance(db, str):
        engine = create_engine(db)
        try:
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as c, c.begin():
                return [[dict(r._mapping) for r in c.execute(text(q))] for q in _MONEY_TABLES]
        finally:
            engine.dispose()
    with contextlib.closing(sqlite3.connect(db, timeout=30, isolation_level=None)) as lite:
        lite.row_factory = sqlite3.Row
        lite.execute("BEGIN")  # one read snapshot (WAL) for every query below
        rows = [_rows(lite, q) for q in _MONEY_TABLES]
        lite.execute("COMMIT")
        return rows


def audit_ledger(db: Path | str) -> Audit:
    """Read the money tables in one snapshot (`db`: a SQLite file, or a database URL) and assert every
    invariant that must hold when Yun is idle."""
    records, reservations, balances, ledger, rollups, billed = _snapshot(db)

    audit = Audit(
        records={r["request_id"]: r for r in records},
        reservations={r["request_id"]: r for r in reservations},
        balances={b["org_id"]: (b["balance"], b["held"]) for b in balances},
    )
    # Exactly one settled usage record per reservation, nothing open, no request id twice.
    assert len(audit.records) == len(records) and len(audit.reservations) == len(reservations)
    open_holds = [rid for rid, r in audit.reservations.items() if r["settled_at"] is None]
    assert open_holds == [], f"{len(open_holds)} reservation(s) never settled: {open_holds[:5]}"
    assert audit.records.keys() == audit.reservations.keys(), (
        f"reservations without a usage record: {sorted(audit.reservations.keys() - audit.records.keys())[:5]}; "
        f"usage records without a reservation: {sorted(audit.records.keys() - audit.reservations.keys())[:5]}"
    )

    charges: dict[str, int] = {}
    ledger_sum: dict[str, int] = {}
    for e in ledger:
        ledger_sum[e["org_id"]] = ledger_sum.get(e["org_id"], 0) + e["amount"]
        if e["kind"] == "charge":
            assert e["reference"] not in charges, f"request {e['reference']} charged twice"
            assert e["amount"] < 0
            charges[e["reference"]] = -e["amount"]
        else:
            audit.credits[e["org_id"]] = audit.credits.get(e["org_id"], 0) + e["amount"]

    compute = {b["charge_ref"]: (b["seconds"], b["price"]) for b in billed}
    assert compute.keys() <= audit.records.keys(), "compute intervals charged by no usage record"
    for rid, r in audit.records.items():
        hold = audit.reservations[rid]
        assert r["org_id"] == hold["org_id"] and r["key_id"] == hold["key_id"]
        if r["endpoint"] == "compute":
            # A dedicated deployment's replica-seconds: exactly the price of the intervals it marked; what
            # passed its hold came from the balance then available (the balance checks below).
            assert (r["compute_seconds"], r["cost"]) == compute.get(rid, (0, 0)), f"{rid} mispriced: {r}"
            assert charges.get(rid, 0) == r["cost"], f"{rid}: ledger charge != usage cost"
            continue
        if r["endpoint"] == "fine_tuning":
            # A fine-tuning job: its trained tokens (never input tokens) at the training price its tests set,
            # $1,000 per 1M (INPUT_NANO a token), never more than it held.
            assert r["prompt_tokens"] == r["completion_tokens"] == 0, f"{rid}: training billed as inference: {r}"
            assert r["cost"] == r["training_tokens"] * INPUT_NANO <= hold["amount"], f"{rid} mispriced: {r}"
            assert charges.get(rid, 0) == r["cost"], f"{rid}: ledger charge != usage cost"
            continue
        assert r["cost"] == expected_cost(r["prompt_tokens"], r["completion_tokens"]), f"{rid} mispriced: {r}"
        assert 0 <= r["cost"] <= hold["amount"], f"{rid} cost {r['cost']} exceeds its hold {hold['amount']}"
        assert charges.get(rid, 0) == r["cost"], f"{rid}: ledger charge {charges.get(rid)} != usage cost {r['cost']}"
        recorded = (hold["progress_prompt_tokens"], hold["progress_completion_tokens"])
        if r["status"] == "interrupted":
            # Settled by crash recovery: at exactly the progress the gateway last recorded on the hold.
            assert (r["prompt_tokens"], r["completion_tokens"]) == recorded, (r, hold)
        else:
            # Settled by the request itself: a progress record never runs ahead of the engine's final count.
            assert recorded[0] <= r["prompt_tokens"] and recorded[1] <= r["completion_tokens"], (r, hold)
    assert charges.keys() <= audit.records.keys(), "a charge without a usage record"

    for org_id, (balance, held) in audit.balances.items():
        costs = sum(r["cost"] for r in audit.records.values() if r["org_id"] == org_id)
        assert held == 0, f"org {org_id} still holds {held} nanodollars while idle"
        assert balance >= 0, f"org {org_id} overdrawn: {balance}"
        assert balance == ledger_sum.get(org_id, 0), f"org {org_id}: balance {balance} != ledger {ledger_sum}"
        assert balance == audit.credits.get(org_id, 0) - costs, f"org {org_id}: balance != credits - usage costs"

    assert {r["org_id"] for r in rollups} == {r["org_id"] for r in audit.records.values()}
    for roll in rollups:
        mine = [r for r in audit.records.values() if r["org_id"] == roll["org_id"]]
        assert (roll["n"], roll["p"], roll["t"], roll["trained"], roll["cost"]) == (
            # compute and training settlements are not requests
            sum(r["endpoint"] not in ("compute", "fine_tuning") for r in mine),
            sum(r["prompt_tokens"] for r in mine),
            sum(r["completion_tokens"] for r in mine),
            sum(r["training_tokens"] for r in mine),
            sum(r["cost"] for r in mine),
        ), f"usage rollups of {roll['org_id']} disagree with its usage records"
    return audit
