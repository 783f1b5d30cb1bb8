"""The load gateways publish for the autoscaler: one contract, run on the database (SQLite, PostgreSQL)
and on Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import _postgres_database
from yun.cluster.load import DatabaseLoadBoard, Load, LoadBoard, RedisLoadBoard
from yun.store import Database, upgrade
from yun.store.loads import LoadRepository

REDIS_URL = "redis://127.0.0.1:6379/0"
BOUND_S = 30.0  # bound on waiting for an expiry; never a measured time


def _database_board(url: str) -> Iterator[LoadBoard]:
    upgrade(url)
    db = Database(url)
    yield DatabaseLoadBoard(LoadRepository(db))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoadBoard]:
    if request.param == "sqlite":
        yield from _database_board(f"sqlite:///{tmp_path / 'yun.db'}")
        return
    if request.param == "postgresql":
        for url in _postgres_database():
            yield from _database_board(url)
        return
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"yun:load:test:{uuid.uuid4().hex}:"
    board = RedisLoadBoard(REDIS_URL, prefix=prefix)
    try:
        yield board
    finally:
        board.close()
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_totals_sum_every_gateway_and_a_gateway_replaces_its_own(board: LoadBoard) -> None:
    board.publish("gw-1", {"a": Load(2, 4), "b": Load(0, 1)}, ttl_s=60)
    board.publish("gw-2", {"a": Load(1, 0), "c": Load()}, ttl_s=60)
    assert board.totals(["a", "b", "c", "d"]) == {"a": Load(3, 4), "b": Load(0, 1)}  # zero: absent
    assert board.totals(["b"]) == {"b": Load(0, 1)}
    board.publish("gw-1", {"a": Load(0, 1)}, ttl_s=60)  # b went to zero on gw-1: it no longer counts
    assert board.totals(["a", "b"]) == {"a": Load(1, 1)}
    board.publish("gw-2", {}, ttl_s=60)  # a clean stop
    assert board.totals(["a", "b", "c"]) == {"a": Load(0, 1)}


def test_a_gateway_that_stops_publishing_stops_counting_at_its_ttl(board: LoadBoard) -> None:
    board.publish("alive", {"a": Load(1, 1)}, ttl_s=600)
    board.publish("dead", {"a": Load(5, 5)}, ttl_s=1)
    assert board.totals(["a"]) == {"a": Load(6, 6)}
    deadline = time.monotonic() + BOUND_S
    while board.totals(["a"]) != {"a": Load(1, 1)}:
        assert time.monotonic() < deadline, "the dead gateway's load never expired"
        time.sleep(0.2)
