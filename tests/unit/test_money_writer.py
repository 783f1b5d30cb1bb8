"""The group-committing money writer, on both databases: batching must never change what is written."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from yun.errors import QuotaExceeded
from yun.store import Database, OrganizationRepository
from yun.store.money import HoldRecord, HoldRequest, MoneyRepository, ResponseWrite, SettleRecord, money_writer
from yun.store.orm import LedgerRow, ReservationRow, ResponseRow, UsageRow
from yun.store.responses import ResponseRepository

HOLD = 1_000


@pytest.fixture
def db(org_db: Database) -> Database:
    return org_db


def hold_request(amount: int = HOLD, *, free_wanted: int = 0, allowance: int = 0, org: str = "org-a") -> HoldRequest:
    return HoldRequest(
        request_id=f"req-{uuid.uuid4().hex}",
        org_id=org,
        key_id="key-1",
        model_id="m",
        endpoint="chat.completions",
        gateway_id="gw",
        price_version=1,
        free_tokens_wanted=free_wanted,
        free_allowance=allowance,
        month="2026-11",
        amount_for=lambda free: max(0, amount - free),
    )


def settled(cost: int, free: int = 0) -> SettleRecord:
    return SettleRecord("r0", 10, 5, 0, free, "ok", 12, 3, cost, 0, 0)


def count(db: Database, row: type, **where: object) -> int:
    table = row.__table__
    with db.reader.connect() as c:
        q = select(func.count()).select_from(table)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        return int(c.execute(q).scalar() or 0)


def test_concurrent_holds_never_overdraw_and_batch(db: Database) -> None:
    """300 holds against credit for 50, submitted at once from an event loop (the server's way: batched
    on the loop for SQLite, on the writer thread for PostgreSQL) and from 4 other threads at the same
    time: exactly 50 succeed, and the loop's holds share commits."""
    money = MoneyRepository(db)
    money.credit("org-a", "grant", 50 * HOLD, "g1")
    futures: list[Future[HoldRecord]] = []
    lock = threading.Lock()
    go = threading.Barrier(5)

    def from_thread() -> None:
        go.wait()
        for _ in range(25):
            f = money_writer(db).reserve(hold_request())
            with lock:
                futures.append(f)

    async def from_loop() -> None:
        money_writer(db).bind_loop(asyncio.get_running_loop())
        go.wait()
        mine = [money_writer(db).reserve(hold_request()) for _ in range(200)]
        await asyncio.gather(*(money_writer(db).wait(f) for f in mine), return_exceptions=True)
        money_writer(db).bind_loop(None)
        with lock:
            futures.extend(mine)

    threads = [threading.Thread(target=from_thread) for _ in range(4)]
    before = money_writer(db).commits
    for t in threads:
        t.start()
    asyncio.run(from_loop())
    for t in threads:
        t.join()
    outcomes = [f.exception(timeout=30) for f in futures]
    refused = [e for e in outcomes if e is not None]
    assert len(outcomes) == 300
    assert all(isinstance(e, QuotaExceeded) for e in refused)
    assert len(outcomes) - len(refused) == 50
    assert money.balance("org-a") == (50 * HOLD, 50 * HOLD)
    assert count(db, ReservationRow) == 50  # a refused hold writes no reservation
    # On SQLite the other threads' 100 holds commit one by one, beside the loop's batches; on PostgreSQL
    # all 300 queue for the writer thread. Either way, written one per commit they would take 300.
    assert money_writer(db).commits - before < 300 - 100, "holds queued together must share commits"


def test_wait_hands_results_and_refusals_to_the_loop(db: Database) -> None:
    """`wait` gives each write's outcome on the loop, whether the writer completes it there (SQLite bound
    to the loop) or in its thread (PostgreSQL); a waiter cancelled meanwhile does not break the write."""
    money = MoneyRepository(db)
    money.credit("org-a", "grant", HOLD, "g1")

    async def run() -> tuple[object, object, int]:
        money_writer(db).bind_loop(asyncio.get_running_loop())
        try:
            abandoned = money_writer(db).reserve(hold_request(HOLD // 2))
            money_writer(db).wait(abandoned).cancel()
            ok = await money_writer(db).wait(money_writer(db).reserve(hold_request(HOLD // 2)))
            refused = await asyncio.gather(
                money_writer(db).wait(money_writer(db).reserve(hold_request())), return_exceptions=True
            )
            await asyncio.wrap_future(abandoned)
            return ok, refused[0], money.balance("org-a")[1]
        finally:
            money_writer(db).bind_loop(None)

    ok, refused, held = asyncio.run(run())
    assert isinstance(ok, HoldRecord) and ok.amount == HOLD // 2
    assert isinstance(refused, QuotaExceeded)
    assert held == HOLD  # the abandoned waiter's hold was written all the same


def test_a_batch_mixing_organizations_answers_each_operation_its_own_result(db: Database) -> None:
    """Batches may run their operations grouped by organization (PostgreSQL lock order): whatever the
    order, each caller gets its own operation's outcome. Org a can pay for 3 holds, org b for none."""
    OrganizationRepository(db).get_or_create("org-b", "b")
    money = MoneyRepository(db)
    money.credit("org-a", "grant", 3 * HOLD, "g1")
    first = [money_writer(db).reserve(hold_request()).result() for _ in range(2)]

    async def batch() -> list[object]:
        money_writer(db).bind_loop(asyncio.get_running_loop())  # SQLite: one batch on the loop
        try:
            ops = [
                money_writer(db).reserve(hold_request(org="org-b")),
                money_writer(db).settle(first[0], settled(100)),
                money_writer(db).reserve(hold_request()),
                money_writer(db).reserve(hold_request(org="org-b")),
                money_writer(db).settle(first[1], settled(200)),
                money_writer(db).reserve(hold_request()),
            ]
            return await asyncio.gather(*(money_writer(db).wait(f) for f in ops), return_exceptions=True)
        finally:
            money_writer(db).bind_loop(None)

    b1, s1, a3, b2, s2, a4 = asyncio.run(batch())
    assert isinstance(b1, QuotaExceeded) and isinstance(b2, QuotaExceeded)
    assert s1 is True and s2 is True
    assert isinstance(a3, HoldRecord) and a3.org_id == "org-a"
    # a's 3rd and 4th holds fit only because the settlements submitted before each of them ran first
    # (with the 4th ahead of the 2nd settlement, it would be refused): one org's order is kept.
    assert isinstance(a4, HoldRecord), a4
    assert money.balance("org-a") == (3 * HOLD - 300, 2 * HOLD)
    assert money.balance("org-b")[1] == 0


def test_refused_hold_in_a_batch_releases_only_its_free_tokens(db: Database) -> None:
    money = MoneyRepository(db)
    money.credit("org-a", "grant", HOLD, "g1")
    # Both ask for 300 free tokens (allowance 500) and hold what is not free: the first gets 300 free
    # and 700 n$; the second gets 200 free, needs 800 n$ and finds 300: refused, its 200 free given back.
    first = money_writer(db).reserve(hold_request(free_wanted=300, allowance=500))
    second = money_writer(db).reserve(hold_request(free_wanted=300, allowance=500))
    assert first.result(timeout=30).free_tokens == 300
    assert isinstance(second.exception(timeout=30), QuotaExceeded)
    assert money.free_used("org-a", "m", "2026-11") == (0, 300)
    assert money.balance("org-a") == (HOLD, 700)


def test_settle_writes_once_and_a_failing_write_fails_only_itself(db: Database) -> None:
    money = MoneyRepository(db)
    money.credit("org-a", "grant", 10 * HOLD, "g1")
    holds = [money_writer(db).reserve(hold_request()).result() for _ in range(3)]
    # A duplicate request id cannot be reserved (primary key): queued between good writes, it must fail
    # alone while the batch around it is retried one by one and lands.
    dup = HoldRequest(**{**hold_request().__dict__, "request_id": holds[0].request_id})
    futures = [
        money_writer(db).settle(holds[1], settled(400)),
        money_writer(db).reserve(dup),
        money_writer(db).settle(holds[2], settled(300)),
        money_writer(db).settle(holds[1], settled(400)),  # a second settlement of the same hold: a no-op
    ]
    assert futures[0].result(timeout=30) is True
    assert futures[1].exception(timeout=30) is not None
    assert futures[2].result(timeout=30) is True
    assert futures[3].result(timeout=30) is False
    assert money_writer(db).settle(holds[0], settled(0, free=0)).result() is True
    assert count(db, UsageRow) == 3
    assert count(db, LedgerRow, kind="charge") == 2
    assert money.balance("org-a") == (10 * HOLD - 700, 0)
    assert money.ledger_sum("org-a") == 10 * HOLD - 700
    assert money.open_holds() == []


def test_a_stored_response_joins_the_batch_and_a_bad_one_fails_only_itself(db: Database) -> None:
    """A Responses API answer is stored by the same group commit as the settlement before it (one
    transaction on SQLite's loop); a duplicate response id fails alone, the settlement still lands, and
    the stored one reads back as written, through the ORM's JSON columns."""
    money = MoneyRepository(db)
    money.credit("org-a", "grant", HOLD, "g1")
    hold = money_writer(db).reserve(hold_request()).result()

    def response(response_id: str) -> ResponseWrite:
        body = {"id": response_id, "output": [{"type": "message", "content": [{"text": "é ✓"}]}]}
        return ResponseWrite(response_id, "org-a", None, "m", '[{"role": "user"}]', json.dumps(body), datetime.now(UTC))

    async def batch() -> tuple[list[object], int]:
        writer = money_writer(db)
        writer.bind_loop(asyncio.get_running_loop())
        try:
            commits = writer.commits
            ops = [
                writer.settle(hold, settled(100)),
                writer.store_response(response("resp_1")),
                writer.store_response(response("resp_1")),
                writer.store_response(response("resp_2")),
            ]
            results = await asyncio.gather(*(writer.wait(f) for f in ops), return_exceptions=True)
            return results, writer.commits - commits
        finally:
            writer.bind_loop(None)

    (settled_ok, first, dup, second), commits = asyncio.run(batch())
    assert settled_ok is True and first is True and second is True
    assert isinstance(dup, Exception)
    if db.embedded:
        assert commits == 3  # the batch of 4 was rolled back on the duplicate, then written one by one
    assert count(db, ResponseRow) == 2
    assert money.balance("org-a") == (HOLD - 100, 0)
    stored = ResponseRepository(db).get("org-a", "resp_1")
    assert stored is not None and stored.response["output"][0]["content"][0]["text"] == "é ✓"
    assert stored.input_items == [{"role": "user"}] and stored.created_at is not None


def test_writer_survives_a_lost_connection(db: Database) -> None:
    """The writer's connection is killed from outside (a database restart, an idle timeout): the next
    write fails at most itself, and the writer reconnects for the ones after."""
    money = MoneyRepository(db)
    money.credit("org-a", "grant", 10 * HOLD, "g1")
    money_writer(db).reserve(hold_request()).result()
    if db.embedded:
        money_writer(db)._raw.close()  # noqa: SLF001 - simulate the loss: nothing else can kill a SQLite link
    else:
        with db.engine.connect() as c:
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    try:
        money_writer(db).reserve(hold_request()).result()
    except Exception:  # noqa: BLE001 - the write that met the dead connection may fail
        pass
    held = money_writer(db).reserve(hold_request()).result()
    assert money_writer(db).settle(held, settled(100)).result() is True
    balance, reserved = money.balance("org-a")
    assert balance == 10 * HOLD - 100
    assert reserved == HOLD * (count(db, ReservationRow) - 1)


def test_a_refusal_states_amounts_in_dollars() -> None:
    from yun.store.money import quota_message

    req = HoldRequest(**{**hold_request().__dict__, "prompt_tokens": 1234, "max_output_tokens": 5})
    text = quota_message(req, needed=4_000_000, balance=6_800_000, held=2_000_000)
    assert "needs a hold of $0.004 (its maximum cost: 1,234 prompt tokens + max_tokens 5)" in text
    assert "has $0.0048 available (balance $0.0068, $0.002 of it held by requests in flight)" in text
    assert "$1,500.00" in quota_message(req, needed=1_500 * 10**9, balance=0, held=0)
    # A dedicated deployment's compute hold is not a request: no advice about max_tokens or prompts.
    compute = HoldRequest(**{**hold_request().__dict__, "endpoint": "compute"})
    text = quota_message(compute, needed=1_000_000, balance=0, held=0)
    assert "the dedicated compute needs a hold of $0.001" in text and "fewer dedicated replicas" in text
    assert "max_tokens" not in text and "prompt" not in text
