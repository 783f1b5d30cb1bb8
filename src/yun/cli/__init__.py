"""`yun` command line: serve, models, orgs, keys, credits, prices, usage, statement."""

from __future__ import annotations

import typer

from yun.cli.billing import register as register_billing
from yun.cli.keys import keys_app
from yun.cli.models import models_app
from yun.cli.orgs import orgs_app
from yun.cli.serve import register as register_serve

__all__ = ["app", "main"]

app = typer.Typer(help="Yun: an open-model AI cloud.", no_args_is_help=True, add_completion=False)
register_serve(app)
app.add_typer(models_app, name="models")
app.add_typer(orgs_app, name="orgs")
app.add_typer(keys_app, name="keys")
register_billing(app)


def main() -> None:
    app()
