"""What every `yun` command shares: one-line errors instead of tracebacks, and validated settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from yun.errors import YunError
from yun.settings import Settings

__all__ = ["CliError", "DataDir", "Database", "YunGroup", "settings_for"]


class CliError(Exception):
    """Something the operator must fix, said in one line (no traceback)."""


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory: database, model cache, logs [default: ~/.local/share/yun]."),
]
Database = Annotated[
    str | None,
    typer.Option("--database", help="sqlite:///PATH or postgresql://USER@HOST/DB [default: SQLite in the data dir]."),
]

# Where each setting can come from on the command line, to name it in an error.
_OPTIONS = {
    "data_dir": "--data-dir",
    "database_url": "--database",
    "redis_url": "--redis",
    "server.host": "--host",
    "server.port": "--port",
    "cluster.role": "--role",
    "cluster.backend": "--cluster",
    "url": "yun login",
}


def settings_for(**overrides: Any) -> Settings:
    """Settings from the environment with CLI overrides on top, validated exactly like the environment
    (a port of 99999 or a database URL Yun cannot use is refused either way). Nested sections are
    given as dicts ({"server": {"port": 9000}}); None means "not given on the command line"."""
    given: dict[str, Any] = {}
    for name, value in overrides.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if not value:
                continue
        elif value is None:
            continue
        given[name] = value
    return Settings(**given)


def settings_message(exc: ValidationError) -> str:
    problems = []
    for e in exc.errors():
        dotted = ".".join(str(p) for p in e["loc"])
        env = "YUN_" + "__".join(str(p) for p in e["loc"]).upper()
        where = f"{_OPTIONS[dotted]} or {env}" if dotted in _OPTIONS else env
        msg = str(e["msg"]).removeprefix("Value error, ")
        got = e.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float) and e["type"] != "value_error" else ""
        if not dotted:  # a rule across settings: its message names the options itself
            problems.append(f"invalid settings: {msg}")
            continue
        problems.append(f"invalid {dotted} ({where}): {msg}{shown}")
    return "; ".join(problems)


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


class YunGroup(TyperGroup):
    """Turns the errors an operator can fix into one line on stderr and exit status 1.

    Anything else is a bug in Yun and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except CliError as exc:
            message = str(exc)
        except YunError as exc:
            message = exc.message
        except ValidationError as exc:
            message = settings_message(exc) if exc.title == "Settings" else str(exc).splitlines()[0]
        except OSError as exc:
            message = _os_message(exc)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)
