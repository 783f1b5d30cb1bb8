"""Alembic migrations, run programmatically at start so `yun serve` needs no separate step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

from yun.errors import DatabaseUnavailable
from yun.store.db import ensure_sqlite_dir

__all__ = ["upgrade"]

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


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema (idempotent)."""
    ensure_sqlite_dir(url)
    _new_sqlite_file(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    try:
        command.upgrade(cfg, "head")
    except OperationalError as exc:
        # The first thing a start does with the database: say which one failed and why, in one line.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise DatabaseUnavailable(f"cannot open the database {_safe(url)}: {reason}") from exc


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
