"""No database call runs on the event loop while a request is served (PostgreSQL, where each one is a
network round trip that would stall every request in flight).

SQLAlchemy's `before_cursor_execute` event records the thread of every statement run through the
engine; the money writer's own statements (raw DB-API, its own thread on PostgreSQL) are not seen,
and need not be: they never run on the loop there. Caches are emptied first, so the requests below
take the miss paths (prices, free allowances, API keys) as a gateway's first requests do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import _postgres_database
from tests.unit.test_gateway_progress import BODY, MODEL, PRICE, PRINCIPAL, FakeLlama, OneModel
from yun.billing import BillingService
from yun.cluster import Endpoint, Pool, ReplicaSpec
from yun.gateway import Gateway, Metrics
from yun.gateway.ratelimit import MemoryRateLimitStore
from yun.store import Database, OrganizationRepository, upgrade


class Statements:
    """The thread and text of every statement the engine runs, from `start()` on."""

    def __init__(self, db: Database) -> None:
        self.seen: list[tuple[int, str]] = []
        self._db = db

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append((threading.get_ident(), statement))

    def start(self) -> None:
        for engine in {self._db.engine, self._db.reader}:
            event.listen(engine, "before_cursor_execute", self._record)

    def on(self, thread: int) -> list[str]:
        return [statement for ident, statement in self.seen if ident == thread]


class Replies(FakeLlama):
    """FakeLlama that also answers unstreamed chat and embedding requests."""

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        usage = {"prompt_tokens": 5, "completion_tokens": 2 if "chat" in path else 0}
        if "embeddings" in path:
            return {"data": [{"index": 0, "embedding": [0.5, 0.5]}], "usage": usage}
        message = {"role": "assistant", "content": "ok"}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}


@pytest.fixture
def pg_db() -> Iterator[Database]:
    for url in _postgres_database():
        upgrade(url)
        database = Database(url)
        OrganizationRepository(database).get_or_create("org-a", "a")
        yield database
        database.dispose()


def _gateway(db: Database, engine: FakeLlama, kind: str, tmp_path: Path) -> Gateway:
    spec = ReplicaSpec(MODEL, kind, url="http://fake.invalid", context_length=4096)
    replica = Endpoint(f"{spec.model_id}/0", engine, 4)  # type: ignore[arg-type]
    billing = BillingService(db, "gw-1")
    billing.money.add_price(MODEL, *PRICE)
    billing.money.credit("org-a", "grant", 10**12, "g1")
    billing.set_free_allowance("org-a", MODEL, 1000)
    cluster: Any = OneModel(Pool(spec, [replica]))
    return Gateway(cluster, Metrics(), billing, MemoryRateLimitStore(), progress_interval_s=0.01)


async def test_inference_requests_run_no_statement_on_the_loop(pg_db: Database, tmp_path: Path) -> None:
    chat, embed = _gateway(pg_db, Replies(), "chat", tmp_path), _gateway(pg_db, Replies(), "embedding", tmp_path)
    recorded = Statements(pg_db)
    recorded.start()
    loop = threading.get_ident()
    for gateway in (chat, embed):
        gateway.billing.invalidate()  # stale: the first request reloads prices and allowances
    await chat.chat(PRINCIPAL, MODEL, {**BODY, "max_tokens": 4}, headers={})
    chunks = await chat.chat_stream(PRINCIPAL, MODEL, {**BODY, "max_tokens": 8}, include_usage=True, headers={})
    async for _ in chunks:
        pass
    await embed.embeddings(PRINCIPAL, MODEL, {"input": "hello"}, "float", headers={})
    assert any("prices" in s for _, s in recorded.seen), "the price cache was meant to be reloaded"
    assert recorded.on(loop) == []
