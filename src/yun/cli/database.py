"""`yun migrate`: the one command besides `yun serve` that opens the database, for upgrades."""

from __future__ import annotations

from pathlib import Path

import typer

from yun.cli._common import CliError, Database, DataDir, settings_for
from yun.cli._output import say

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


def migrate(data_dir: DataDir = None, database: Database = None) -> None:
    """Bring an existing database to the newest schema without starting a server.

    `yun serve` does the same at every start; this is for upgrading before the servers come back.
    It never creates a database: the first `yun serve` does that."""
    from yun.store import upgrade

    settings = settings_for(data_dir=data_dir, database_url=database)
    url = settings.resolved_database_url
    where = "PostgreSQL"
    if url.startswith("sqlite"):
        found = Path(url.split("///", 1)[-1])
        where = str(found)
        if not found.is_file():
            raise CliError(
                f"no Yun database at {found}; `yun serve --data-dir {settings.data_dir}` creates one at its first "
                "start (or name the existing one with --data-dir or --database)"
            )
    upgrade(url)
    say(f"the database is at the newest schema ({where})")
