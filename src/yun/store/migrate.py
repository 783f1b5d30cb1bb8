"""Alembic migrations, run programmatically at start so `yun serve` needs no separate step."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from yun.store.db import ensure_sqlite_dir

__all__ = ["upgrade"]

_HERE = Path(__file__).parent / "migrations"


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema (idempotent)."""
    ensure_sqlite_dir(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
