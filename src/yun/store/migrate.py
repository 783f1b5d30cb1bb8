"""Alembic migrations, run programmatically at start so `yun serve` needs no separate step."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from yun.errors import DatabaseUnavailable
from yun.store.db import ensure_sqlite_dir

__all__ = ["setup_lock", "upgrade"]

# The key of the PostgreSQL advisory lock that serialises first-start work ("YUNSETUP" in ASCII). Any
# int64 works; a fixed one makes every Yun process on the database take the same lock.
_SETUP_LOCK_KEY = 0x59554E5345545550

_HERE = Path(__file__).parent / "migrations"


_SQLITE_PAGE_SIZE = 1024


def _new_sqlite_file(url: str) -> None:
    """Create a new SQLite database with 1 KiB pages (SQLite's default is 4 KiB). Each commit writes
    every page it touched to the WAL: a request's hold and settlement touch about 20 pages, so 1 KiB
    pages cut the WAL written per request from ~80 KB to ~24 KB (and the fsyncs of checkpoints, which
    stalled requests, with it). Rows here are small, so trees are hardly deeper. Existing files keep
    their page size (changing it needs a VACUUM)."""
    if not url.startswith("sqlite"):
        return
    path = url.split("///", 1)[-1]
    if not path or path == ":memory:" or (Path(path).exists() and Path(path).stat().st_size > 0):
        return
    with sqlite3.connect(path) as conn:  # the page size sticks once the file has a table
        conn.executescript(f"PRAGMA page_size={_SQLITE_PAGE_SIZE}; CREATE TABLE _yun_init (x); DROP TABLE _yun_init;")
    conn.close()


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[Connection | None]:
    """Hold the database's setup lock: one process at a time migrates it or mints its first admin key.

    Several gateways started together on a blank database would otherwise each create the schema (all
    but one failing on `alembic_version`) and each mint a bootstrap key. PostgreSQL: a session-level
    advisory lock on a connection of its own, which is yielded (migrations run on it, so they run
    inside the lock's scope); it is released when the block ends, or by PostgreSQL if the process dies.
    SQLite: an exclusive `flock` on a file beside the database (released by the kernel if the process
    dies); None is yielded.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or path == ":memory:":
            yield None
            return
        ensure_sqlite_dir(url)
        with open(path + ".setup.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # waits for the process that holds it
            try:
                yield None
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    if not url.startswith("postgresql"):
        yield None
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SETUP_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()  # whatever the block left open; the unlock must not fail on it
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SETUP_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema (idempotent), under the setup lock."""
    try:
        with setup_lock(url) as connection:
            ensure_sqlite_dir(url)
            _new_sqlite_file(url)
            cfg = Config()
            cfg.set_main_option("script_location", str(_HERE))
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            if connection is not None:
                connection.commit()
    except OperationalError as exc:
        # The first thing a start does with the database: say which one failed and why, in one line.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise DatabaseUnavailable(f"cannot open the database {_safe(url)}: {reason}") from exc


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
