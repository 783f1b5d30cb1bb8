"""What the CLI does with no server at all: bad settings are one line (item 9), and its surface is
documented and usable (item 11)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress
from typer.main import get_command
from typer.testing import CliRunner

from tests.cli.conftest import Cli
from yun.cli import app
from yun.cli._output import print_table
from yun.cli.serve import _AmountColumn
from yun.settings import Settings


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({"YUN_SERVER__PORT": "abc"}, ["orgs", "list"], "invalid server.port (--port or YUN_SERVER__PORT)"),
        ({"YUN_URL": "localhost:8000"}, ["orgs", "list"], "invalid url"),
        ({}, ["serve", "--port", "99999"], "less than or equal to 65535"),
        ({}, ["serve", "--port", "abc"], "Invalid value for '--port'"),
        ({}, ["serve", "--database", "foo://bar"], "must be sqlite:///PATH or postgresql://"),
        ({}, ["serve", "--database", "mysql://u@h/db"], "must be sqlite:///PATH or postgresql://"),
        ({}, ["serve", "--data-dir", "/proc/nope"], "/proc/nope"),
        # Nothing listens on port 1: the driver is installed and the failure is the connection, in one line.
        ({}, ["serve", "--database", "postgresql://postgres@127.0.0.1:1/x"], "cannot open the database"),
        ({}, ["login", "ftp://h"], "invalid url"),
    ],
)
def test_bad_settings_are_one_line(
    bare_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], args: list[str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if args[0] == "serve":  # never the operator's own data dir or port 8000, whatever a start does first
        if "--data-dir" not in args:
            args = [*args, "--data-dir", str(tmp_path / "data")]
        if "--port" not in args:
            args = [*args, "--port", "0"]
    result = bare_cli.runner.invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception
    assert says in result.output and "Traceback" not in result.output, result.output


def test_postgres_urls_use_the_installed_driver() -> None:
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    import psycopg  # a main dependency now, not a dev extra

    assert psycopg.__version__


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and re.fullmatch(r"yun \d+\.\d+\.\d+\S*\n", result.stdout)


def _commands(group: object, prefix: str = "") -> list[tuple[str, object]]:
    found = []
    for name, cmd in getattr(group, "commands", {}).items():
        found.append((f"{prefix}{name}", cmd))
        found += _commands(cmd, f"{prefix}{name} ")
    return found


def test_every_command_and_option_has_help() -> None:
    root = get_command(app)
    missing = []
    for name, cmd in _commands(root):
        if not (getattr(cmd, "help", None) or getattr(cmd, "short_help", None)):
            missing.append(name)
        for param in getattr(cmd, "params", []):
            if param.name != "help" and not getattr(param, "help", None):
                missing.append(f"{name} {param.name}")
    assert missing == []


def test_serve_flags_read_naturally_and_completion_is_offered() -> None:
    serve_help = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--no-default-models" in serve_help and "--no-no-" not in serve_help
    root_help = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "--install-completion" in root_help and "--show-completion" in root_help


def test_tables_never_cut_ids(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    key_id, model = "key_" + "0123456789abcdef" * 2, "qwen2.5-coder-0.5b-instruct-with-a-long-name"
    row = [key_id, model, "org-" + "a" * 20, "n", "r", "x"]
    print_table(["id", "model", "org", "name", "role", "last used"], [row])
    out = capsys.readouterr().out
    assert key_id in out and model in out


def test_a_conversion_shows_a_percentage_not_bytes() -> None:
    buf = io.StringIO()
    with Progress(_AmountColumn(), console=Console(file=buf, width=80, force_terminal=False)) as progress:
        steps = progress.add_task("converting", total=1, unit="steps")
        progress.update(steps, completed=1)
        copy = progress.add_task("joining", total=2_000_000, unit="bytes")
        progress.update(copy, completed=1_000_000)
    out = buf.getvalue()
    assert "100%" in out and "1/1" not in out and "bytes" not in out
    assert "1.0/2.0 MB" in out


def test_login_file_under_xdg_config_home(cli_env: Path) -> None:
    assert Settings().config_dir == cli_env


def test_migrate_never_creates_a_database(bare_cli: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    line = bare_cli.fail("migrate", "--data-dir", str(typo))
    assert f"no Yun database at {typo / 'yun.db'}" in line and "yun serve --data-dir" in line
    assert not typo.exists()
    from yun.store import upgrade

    upgrade(f"sqlite:///{tmp_path / 'real' / 'yun.db'}")
    assert "newest schema" in bare_cli.run("migrate", "--data-dir", str(tmp_path / "real"))


def test_migrate_an_existing_database(bare_cli: Cli, database_url: str) -> None:
    """PostgreSQL: the database exists (empty); SQLite: a file Yun made before."""
    if database_url.startswith("sqlite"):
        bare_cli.fail("migrate", "--database", database_url)  # not there yet: refused, not created
        from yun.store import upgrade

        upgrade(database_url)
    assert "newest schema" in bare_cli.run("migrate", "--database", database_url)


def test_admin_commands_do_not_load_the_store() -> None:
    """Every admin command is an HTTP client: importing the CLI must not pull in SQLAlchemy (0.2 s a command)."""
    import subprocess
    import sys

    code = "import sys, yun.cli, yun.cli.keys as k, yun.tenancy as t; "
    code += "assert k.DEFAULT_ORG == t.DEFAULT_ORG"
    subprocess.run([sys.executable, "-c", code], check=True)
    probe = "import sys, yun.cli; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
