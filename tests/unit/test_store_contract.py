"""One contract, two real databases (SQLite file with WAL, PostgreSQL)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from yun.errors import AuthenticationFailed, InvalidRequest, NotFound
from yun.store import Database, KeyRepository, ModelRecord, ModelRepository, OrganizationRepository, upgrade
from yun.store.money import HoldRequest, MoneyRepository, money_writer
from yun.store.secrets import SecretBox
from yun.tenancy import DEFAULT_ORG, KeyService


@pytest.fixture
def db(database_url: str) -> Database:
    upgrade(database_url)
    upgrade(database_url)  # idempotent: a restart must not fail on an up-to-date schema
    database = Database(database_url)
    OrganizationRepository(database).get_or_create(DEFAULT_ORG, "default")
    yield database
    database.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(url)
    database = Database(url)
    with database.session() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    database.dispose()


def test_keys_are_stored_hashed_and_verified(db: Database) -> None:
    keys = KeyService(KeyRepository(db))
    issued = keys.issue(DEFAULT_ORG, "ci")
    principal = keys.verify(issued.secret)
    assert principal.org_id == DEFAULT_ORG and principal.key_id == issued.record.id
    with db.session() as s:
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM api_keys")) for v in row)
    assert issued.secret not in dump
    assert issued.secret[len("yun-") :] not in dump
    assert issued.record.prefix in dump


@pytest.mark.parametrize("secret", [None, "", "sk-abc", "yun-" + "x" * 43, "yun-short"])
def test_bad_secrets_are_refused(db: Database, secret: str | None) -> None:
    with pytest.raises(AuthenticationFailed):
        KeyService(KeyRepository(db)).verify(secret)


def test_revoked_and_expired_keys_are_refused(db: Database) -> None:
    keys = KeyService(KeyRepository(db))
    revoked = keys.issue(DEFAULT_ORG, "revoked")
    keys.verify(revoked.secret)  # warm the cache: revocation must still win
    keys.revoke(revoked.record.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        keys.verify(revoked.secret)
    expired = keys.issue(DEFAULT_ORG, "old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        keys.verify(expired.secret)
    with pytest.raises(NotFound):
        keys.revoke("key_missing")


def test_model_repository_roundtrip(db: Database) -> None:
    repo = ModelRepository(db, SecretBox(Fernet.generate_key(), "a test key"))
    added = repo.add(ModelRecord(id="m1", kind="chat", source="external", url="http://x", card={"a": 1}))
    assert added.created_at is not None
    got = repo.get("m1")
    assert got is not None and got.card == {"a": 1} and got.url == "http://x"
    assert got.created_at is not None and got.created_at.tzinfo is not None
    with pytest.raises(InvalidRequest):
        repo.add(ModelRecord(id="m1", kind="chat", source="external", url="http://y"))
    repo.upsert(ModelRecord(id="m1", kind="chat", source="external", url="http://z"))
    assert [m.url for m in repo.list()] == ["http://z"]
    repo.remove("m1")
    assert repo.get("m1") is None
    with pytest.raises(NotFound):
        repo.remove("m1")


def test_migrations_match_the_orm(db: Database) -> None:
    """The schema Alembic builds is the one the code declares (indexes included), on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from yun.store.orm import Base

    with db.engine.connect() as c:
        diffs = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diffs == []


def test_new_sqlite_files_use_small_pages_and_the_wal_stays_bounded(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    database = Database(url)
    OrganizationRepository(database).get_or_create(DEFAULT_ORG, "default")
    with database.session() as s:
        assert s.execute(text("PRAGMA page_size")).scalar() == 1024
    keys = KeyService(KeyRepository(database))
    for i in range(50):
        keys.issue(DEFAULT_ORG, f"k{i}")
    wal = tmp_path / "p.db-wal"
    assert wal.stat().st_size > 4096

    def wal_frames() -> int:
        with contextlib.closing(sqlite3.connect(tmp_path / "p.db")) as c:
            return int(c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    before = wal_frames()
    database.checkpoint(wal_limit_bytes=4096)  # over the limit: checkpointed, and the next write restarts it
    keys.issue(DEFAULT_ORG, "after")
    assert 0 < wal_frames() < before / 10
    size = wal.stat().st_size
    for i in range(50):  # written over from its start: the file does not grow
        keys.issue(DEFAULT_ORG, f"again{i}")
        database.checkpoint(wal_limit_bytes=4096)
    assert wal.stat().st_size <= size
    assert len(KeyRepository(database).list(DEFAULT_ORG)) == 101
    database.dispose()


class _Ticks(threading.Event):
    """The checkpoint loop's stop event, counting the loop's turns: the loop waits on it once per turn, so
    when the n-th wait begins, n - 1 turns (each a checkpoint or a skip) have finished."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self._changed = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self._changed:
            self.started += 1
            self._changed.notify_all()
        return super().wait(timeout)

    def finished(self, turns: int) -> None:
        """Return once `turns` more turns of the loop have finished (bounded: a stuck loop fails the test)."""
        with self._changed:
            target = self.started + turns + 1
            assert self._changed.wait_for(lambda: self.started >= target, timeout=30), "the loop stopped turning"


def test_background_checkpoints_run_only_after_money_writes(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    database = Database(url)
    OrganizationRepository(database).get_or_create(DEFAULT_ORG, "default")
    runs: list[int] = []
    monkeypatch.setattr(database, "checkpoint", lambda: runs.append(money_writer(database).commits))
    ticks = _Ticks()
    database._stop_checkpoints = ticks  # observe the loop's turns instead of sleeping through some
    database.start_checkpoints(every_s=0.01)
    ticks.finished(10)
    idle = len(runs)
    money = MoneyRepository(database)
    money.credit(DEFAULT_ORG, "grant", 10_000, "g1")
    hold = (
        money_writer(database)
        .reserve(
            HoldRequest("req-1", DEFAULT_ORG, "k", "m", "chat.completions", "gw", None, 0, 0, "2026-12", lambda _: 100)
        )
        .result()
    )
    ticks.finished(10)  # the commit is done (reserve returned), so one of these turns sees it
    database.dispose()  # stops the thread
    assert idle <= 1, "an idle database is not checkpointed over and over"
    assert len(runs) == idle + 1 and runs[-1] >= 1, "one checkpoint after the write, none after"
    assert hold.amount == 100
