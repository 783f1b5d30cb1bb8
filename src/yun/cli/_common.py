"""Shared pieces of the `yun` command line: options, settings, consoles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from yun.errors import YunError
from yun.settings import Settings

__all__ = ["DataDir", "Database", "fail", "out", "err", "services_for", "settings_for"]


def out() -> Console:
    # Built per call so that COLUMNS and the current stdout (tests, pipes) are honoured.
    return Console()


def err() -> Console:
    return Console(stderr=True)


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (database, model cache).")]
Database = Annotated[str | None, typer.Option("--database", help="SQLAlchemy URL (default: SQLite in data dir).")]


def settings_for(data_dir: Path | None, database: str | None, **server: Any) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database is not None:
        overrides["database_url"] = database
    base = Settings()
    if server:
        overrides["server"] = base.server.model_copy(update={k: v for k, v in server.items() if v is not None})
    return base.model_copy(update=overrides) if overrides else base


def services_for(settings: Settings) -> Any:
    from yun.api import build_services

    try:
        return build_services(settings)
    except YunError as exc:  # e.g. a secrets key that cannot open the stored secrets: a message, not a traceback
        raise fail(exc) from exc


def fail(exc: YunError) -> typer.Exit:
    err().print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(2)
