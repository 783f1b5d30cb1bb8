"""`yun credits`, `yun prices`, `yun free-tier`, `yun usage`, `yun statement`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from yun.cli._common import Database, DataDir, fail, out, services_for, settings_for
from yun.errors import YunError

__all__ = ["register"]

credits_app = typer.Typer(help="Prepaid credits.", no_args_is_help=True)
prices_app = typer.Typer(help="Versioned model prices (USD per 1M tokens).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(credits_app, name="credits")
    app.add_typer(prices_app, name="prices")
    app.command("free-tier")(free_tier)
    app.command("usage")(usage)
    app.command("statement")(statement)


@credits_app.command("grant")
def credits_grant(
    org_id: str,
    amount: Annotated[str, typer.Argument(help="USD, e.g. 25 or 0.50")],
    kind: Annotated[str, typer.Option(help="grant, topup, refund or adjustment")] = "grant",
    reference: Annotated[str | None, typer.Option(help="Idempotency key: posted once.")] = None,
    note: Annotated[str | None, typer.Option()] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    services = services_for(settings_for(data_dir, database))
    try:
        services.org_service.get(org_id)
        posted = services.billing.credit(org_id, amount, kind, reference, note)
    except YunError as exc:
        raise fail(exc) from exc
    b = services.billing.balance(org_id)
    out().print(f"{'posted' if posted else 'already posted'}; balance ${b['balance']:.9f} (held ${b['held']:.9f})")


@credits_app.command("balance")
def credits_balance(org_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    b = services_for(settings_for(data_dir, database)).billing.balance(org_id)
    out().print(f"balance ${b['balance']:.9f}, held ${b['held']:.9f}, available ${b['available']:.9f}")


@prices_app.command("set")
def prices_set(
    model_id: str,
    input: Annotated[str, typer.Option("--input", help="USD per 1M input tokens")],
    output: Annotated[str, typer.Option("--output", help="USD per 1M output tokens")],
    cached_input: Annotated[str | None, typer.Option("--cached-input", help="USD per 1M cached tokens")] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    services = services_for(settings_for(data_dir, database))
    try:
        services.catalog.get(model_id)
        p = services.billing.set_price(model_id, input, output, cached_input)
    except YunError as exc:
        raise fail(exc) from exc
    out().print(f"{model_id}: price version {p.version}")


@prices_app.command("list")
def prices_list(model_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    services = services_for(settings_for(data_dir, database))
    table = Table("version", "input $/1M", "output $/1M", "cached $/1M", "since")
    for p in services.billing.money.price_history(model_id):
        table.add_row(
            str(p.version),
            str(p.input_per_mtok / 1e9),
            str(p.output_per_mtok / 1e9),
            str(p.cached_input_per_mtok / 1e9),
            p.created_at.isoformat(timespec="seconds"),
        )
    out().print(table)


def free_tier(
    model_id: str,
    monthly_tokens: int,
    org: Annotated[str, typer.Option(help="Organization id, or * for every org.")] = "*",
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """Set a monthly free token allowance for a model."""
    services = services_for(settings_for(data_dir, database))
    try:
        services.catalog.get(model_id)
        services.billing.set_free_allowance(org, model_id, monthly_tokens)
    except YunError as exc:
        raise fail(exc) from exc
    out().print(f"{model_id}: {monthly_tokens} free tokens a month for {org}")


def usage(
    org_id: str,
    days: Annotated[int, typer.Option(help="Last N days.")] = 30,
    by: Annotated[str, typer.Option(help="model or day")] = "model",
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """Usage and spend of one organization, from the rollups."""
    if by not in ("model", "day"):
        raise typer.BadParameter("--by is model or day")
    services = services_for(settings_for(data_dir, database))
    today = datetime.now(UTC).date()
    rows = services.usage.summary(org_id, today - timedelta(days=days - 1), today, by)
    table = Table(by, "requests", "input", "cached", "output", "free", "cost $")
    for r in rows:
        table.add_row(
            str(r.key),
            str(r.requests),
            str(r.prompt_tokens),
            str(r.cached_tokens),
            str(r.completion_tokens),
            str(r.free_tokens),
            f"{r.cost / 1e9:.9f}",
        )
    out().print(table)


def statement(
    org_id: str,
    month: Annotated[str, typer.Argument(help="YYYY-MM")],
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of JSON.")] = False,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """The monthly statement of one organization."""
    import json

    try:
        year, mon = (int(x) for x in month.split("-"))
        date(year, mon, 1)
    except ValueError as exc:
        raise typer.BadParameter("month is YYYY-MM") from exc
    st = services_for(settings_for(data_dir, database)).statements(org_id, year, mon)
    typer.echo(st.to_csv() if csv else json.dumps(st.to_json(), indent=2))
