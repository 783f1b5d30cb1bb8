"""Engine and session factory for SQLite (embedded default, WAL) and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "Writer", "ensure_sqlite_dir"]

log = logging.getLogger("yun.store")


class Writer(Protocol):
    """What the database needs of the writer attached to it (the money package's MoneyWriter): the
    count of its commits (to skip idle checkpoints) and `close()` at dispose. The database never
    imports the writer: the writer's module imports the database and attaches itself (`Database.writer`)."""

    @property
    def commits(self) -> int: ...

    def close(self) -> None: ...


W = TypeVar("W", bound=Writer)


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its directory. The directory is created 0700 and the database
    file 0600, and an existing file is made 0600 (with its -wal and -shm): the database holds the
    tenants' usage and Yun's sealed secrets, nothing another local user should read. SQLite creates
    -wal and -shm with the database file's own mode."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.path.exists(path):
                # Only a file that does not exist yet is opened here: closing a descriptor of a database
                # this process already has open would drop SQLite's POSIX locks on it (fcntl locks belong
                # to the process, and any close releases them), and other processes would then read the
                # WAL as if no one had the database open.
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            for name in (path, path + "-wal", path + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(name, 0o600)


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails with
    # "database is locked" (no busy wait) when another writer got in between, which under load
    # would refuse paying requests. WAL still lets readers outside transactions proceed.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    # A WAL checkpoint fsyncs the database (measured: 5-45 ms). Left automatic, it runs inside whichever
    # commit crosses the threshold, on the event loop, and stalls every request in flight; instead
    # `checkpoint()` runs it from a background thread.
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would otherwise start deferred ones).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL lets readers (console, usage queries) run while the gateway writes; busy_timeout makes a
    # second writer wait instead of failing with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """Owns the SQLAlchemy engine; hand out sessions with `session()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.embedded = url.startswith("sqlite")
        """True for an in-process database (SQLite), whose short transactions need no worker thread."""
        if url.startswith("sqlite"):
            ensure_sqlite_dir(url)
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "connect", _no_autocheckpoint)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
            # Reads (usage, statements) go through a second engine whose transactions begin deferred,
            # so a long report never holds the write lock that settlements need.
            self.reader: Engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(self.reader, "connect", _sqlite_pragmas)
            event.listen(self.reader, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            self.reader = self.engine
        self._writer: Writer | None = None
        self._writer_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._page_bytes = 0
        self._stop_checkpoints = threading.Event()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.reader, expire_on_commit=False)

    def writer(self, make: Callable[[Database], W]) -> W:
        """The one writer attached to this database (per process), made by `make` on first use; every
        call must pass the same `make` (see `yun.store.money.money_writer`)."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = make(self)
            return cast(W, self._writer)

    def session(self) -> Session:
        return self._sessions()

    def read_session(self) -> Session:
        """For lookups that write nothing: on SQLite they then never take (or wait for) the write lock."""
        return self._read_sessions()

    def checkpoint(self, wal_limit_bytes: int = 64 << 20) -> None:
        """Fold the SQLite WAL back into the database. No-op elsewhere. Called often (every fraction of a
        second) from a background thread, so each run copies only the pages changed since the last one.

        PASSIVE never blocks the writer, but SQLite rewinds the WAL only when a write begins after a
        checkpoint copied every frame, and under steady load a write always comes in during the copy: the
        WAL grows without end (measured: 60k+ frames while every PASSIVE run reported itself complete).
        So once the WAL holds more than `wal_limit_bytes`, a second PASSIVE run copies what came in during
        the first, and a RESTART checkpoint (which holds the write lock while it copies the last few frames
        and syncs) makes the next write start the WAL again from its beginning. RESTART, not TRUNCATE:
        truncating a large file held the write lock for 35-335 ms where RESTART held it for 1-12 ms
        (/tmp experiment, hold + settle in a loop on SQLite); the file keeps its size and is overwritten.
        """
        if not self.embedded:
            return
        raw = self.reader.raw_connection()  # outside any transaction, so it can reach the WAL's end
        try:
            cur = raw.cursor()
            _, frames, _ = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames * self._page_size(cur) > wal_limit_bytes:
                cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                cur.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            raw.close()

    def _page_size(self, cur: Any) -> int:
        if self._page_bytes == 0:
            self._page_bytes = int(cur.execute("PRAGMA page_size").fetchone()[0])
        return self._page_bytes

    def start_checkpoints(self, every_s: float = 0.25) -> None:
        """Run `checkpoint()` every `every_s` from a thread of its own, at the lowest CPU priority,
        whenever the money writer committed something since the last run (no-op for PostgreSQL).

        Small and frequent, so each copies a fraction of a second's pages (rare big ones stalled requests
        for hundreds of ms). Its own thread at nice 19, because on a gateway pinned to one core the copy
        competed with the event loop for that core: the scheduler now runs it when the loop waits.
        Skipped when nothing was written: an idle gateway wakes nothing, and every wake-up on a 2-core
        machine takes a core from the engine's threads. What others wrote (admin, CLI) waits for the
        next request's checkpoint.
        """
        if not self.embedded or self._checkpointer is not None:
            return
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(every_s,), name="yun-wal-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self, every_s: float) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only (Linux)
        except OSError:
            log.debug("could not lower the checkpoint thread's priority", exc_info=True)
        seen = -1
        while not self._stop_checkpoints.wait(every_s):
            writer = self._writer
            commits = 0 if writer is None else writer.commits
            if commits == seen:
                continue
            seen = commits
            try:
                self.checkpoint()
            except Exception:  # noqa: BLE001 - the next run tries again; the WAL keeps the data meanwhile
                log.exception("WAL checkpoint failed")

    def dispose(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        if self._writer is not None:
            self._writer.close()  # what is queued is written before the connections go
        self.engine.dispose()
        self.reader.dispose()
