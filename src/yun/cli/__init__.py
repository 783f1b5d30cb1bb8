"""The `yun` command line.

`yun serve` runs the server and, with `yun migrate`, is the only command that opens the database
(neither touches one that is not Yun's; only a first `yun serve` creates one). Every other command is
a client of the server's HTTP admin API (`/admin/...`): log in once with `yun login URL`, or set
YUN_URL and YUN_API_KEY.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from yun.cli._common import YunGroup
from yun.cli.billing import register as register_billing
from yun.cli.database import register as register_database
from yun.cli.deployments import deployments_app
from yun.cli.files import files_app
from yun.cli.jobs import jobs_app
from yun.cli.keys import keys_app
from yun.cli.models import models_app
from yun.cli.orgs import members_app, orgs_app
from yun.cli.serve import register as register_serve
from yun.cli.session import register as register_session
from yun.cli.users import users_app

__all__ = ["app", "main"]

app = typer.Typer(
    cls=YunGroup,
    help="Yun: an open-model AI cloud. `yun serve` runs it; the other commands manage it over HTTP.",
    no_args_is_help=True,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"yun {version('yun')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version_flag: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print Yun's version and exit."),
    ] = False,
) -> None:
    """Yun: an open-model AI cloud. `yun serve` runs it; the other commands manage it over HTTP."""


register_serve(app)
register_database(app)
register_session(app)
app.add_typer(models_app, name="models")
app.add_typer(deployments_app, name="deployments")
app.add_typer(orgs_app, name="orgs")
app.add_typer(members_app, name="members")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
register_billing(app)


def main() -> None:
    app()
