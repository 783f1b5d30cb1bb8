"""`yun orgs`: organizations (tenants) and their limits."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from yun.cli._common import Database, DataDir, fail, out, services_for, settings_for
from yun.errors import YunError

__all__ = ["orgs_app"]

orgs_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)


@orgs_app.command("create")
def orgs_create(
    name: str,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute for the whole org.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute for the whole org.")] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    try:
        org = services_for(settings_for(data_dir, database)).org_service.create(name, rpm, tpm)
    except YunError as exc:
        raise fail(exc) from exc
    out().print(org.id)


@orgs_app.command("list")
def orgs_list(data_dir: DataDir = None, database: Database = None) -> None:
    services = services_for(settings_for(data_dir, database))
    table = Table("id", "name", "rpm", "tpm", "balance $", "held $")
    for org in services.orgs.list():
        b = services.billing.balance(org.id)
        table.add_row(
            org.id,
            org.name,
            str(org.rpm_limit or ""),
            str(org.tpm_limit or ""),
            f"{b['balance']:.6f}",
            f"{b['held']:.6f}",
        )
    out().print(table)


@orgs_app.command("limits")
def orgs_limits(
    org_id: str,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (omit for none).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (omit for none).")] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    try:
        services_for(settings_for(data_dir, database)).orgs.set_limits(org_id, rpm, tpm)
    except YunError as exc:
        raise fail(exc) from exc
    out().print(f"{org_id}: rpm={rpm or 'unlimited'} tpm={tpm or 'unlimited'}")
