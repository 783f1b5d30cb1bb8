"""`yun credits`, `yun prices`, `yun free-tier`, `yun usage`, `yun statement`, `yun ledger`, `yun economics`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from yun.cli._client import connect, path
from yun.cli._output import print_json, print_table, say, when
from yun.cli.compute import compute_prices_app, economics

__all__ = ["register"]

credits_app = typer.Typer(help="Prepaid credits: grant and read balances.", no_args_is_help=True)
prices_app = typer.Typer(
    help="Versioned prices: models (USD per 1M tokens) and compute (`yun prices compute`).", no_args_is_help=True
)
prices_app.add_typer(compute_prices_app, name="compute")

Org = Annotated[str, typer.Argument(help="Organization id or name.")]
Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]
Days = Annotated[int, typer.Option("--days", min=1, max=36500, help="The last N UTC days, today included.")]


def register(app: typer.Typer) -> None:
    app.add_typer(credits_app, name="credits")
    app.add_typer(prices_app, name="prices")
    app.command("free-tier")(free_tier)
    app.command("usage")(usage)
    app.command("statement")(statement)
    app.command("ledger")(ledger)
    app.command("economics")(economics)


def _range(days: int) -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"start": (today - timedelta(days=days - 1)).isoformat(), "end": today.isoformat()}


@credits_app.command("grant")
def credits_grant(
    org: Org,
    amount: Annotated[str, typer.Argument(help="USD, e.g. 25 or 0.50.")],
    kind: Annotated[str, typer.Option("--kind", help="grant, topup, refund or adjustment.")] = "grant",
    reference: Annotated[
        str | None, typer.Option("--reference", help="Idempotency key: the same reference is posted once.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note kept on the ledger entry.")] = None,
) -> None:
    """Post credits to an organization's ledger (a negative amount only as --kind adjustment)."""
    body = {"amount": amount, "kind": kind, "reference": reference, "note": note}
    with connect() as client:
        done = client.post(path("admin", "orgs", org, "credits"), {k: v for k, v in body.items() if v is not None})
    b = done["balance"]
    state = "posted" if done["posted"] else "already posted"
    say(f"{state}; balance ${b['balance']:.9f} (held ${b['held']:.9f})")


@credits_app.command("balance")
def credits_balance(org: Org, json: Json = False) -> None:
    """An organization's balance, what running requests hold, and what is available."""
    with connect() as client:
        b = client.get(path("admin", "orgs", org, "balance"))
    if json:
        print_json(b)
        return
    say(f"balance ${b['balance']:.9f}, held ${b['held']:.9f}, available ${b['available']:.9f}")


@prices_app.command("set")
def prices_set(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    input: Annotated[str, typer.Option("--input", help="USD per 1M input tokens.")],
    output: Annotated[str, typer.Option("--output", help="USD per 1M output tokens.")],
    cached_input: Annotated[
        str | None, typer.Option("--cached-input", help="USD per 1M cached input tokens [default: the input price].")
    ] = None,
    training: Annotated[
        str | None,
        typer.Option("--training", help="USD per 1M trained tokens (fine-tuning) [default: unchanged]."),
    ] = None,
) -> None:
    """Add a price version; requests already running keep the version they started with."""
    body = {"input": input, "output": output}
    if cached_input is not None:
        body["cached_input"] = cached_input
    if training is not None:
        body["training"] = training
    with connect() as client:
        p = client.put(path("admin", "prices", model_id), body)
    say(f"{model_id}: price version {p['version']}")


@prices_app.command("list")
def prices_list(
    model_id: Annotated[
        str | None, typer.Argument(help="A model: its whole price history [default: current price of every model].")
    ] = None,
    json: Json = False,
) -> None:
    """Current prices of every model, or every version of one model's price."""
    with connect() as client:
        found = client.get("/admin/prices" if model_id is None else path("admin", "prices", model_id))
    if json:
        print_json(found)
        return
    print_table(
        ["model", "version", "input $/1M", "output $/1M", "cached $/1M", "training $/1M", "since"],
        (
            [
                p["model"],
                p["version"],
                p["input"],
                p["output"],
                p["cached_input"],
                p["training"] or "-",
                when(p["created_at"]),
            ]
            for p in found["data"]
        ),
    )


def free_tier(
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    monthly_tokens: Annotated[int, typer.Argument(help="Free tokens per UTC month (0 removes the allowance).")],
    org: Annotated[str, typer.Option("--org", help="Organization id or name, or * for every org.")] = "*",
) -> None:
    """Set a monthly free token allowance for a model."""
    with connect() as client:
        body = {"model": model_id, "monthly_tokens": monthly_tokens, "org_id": org}
        done = client.put("/admin/free-allowances", body)
    say(f"{model_id}: {monthly_tokens} free tokens a month for {done['org_id']}")


def usage(
    org: Org,
    days: Days = 30,
    by: Annotated[str, typer.Option("--by", help="Group by model or day.")] = "model",
    json: Json = False,
) -> None:
    """Usage and spend of one organization, from the rollups."""
    with connect() as client:
        found = client.get(path("admin", "orgs", org, "usage"), group_by=by, **_range(days))
    if json:
        print_json(found)
        return
    print_table(
        [by, "requests", "input", "cached", "output", "free", "trained", "replica-s", "cost $"],
        (
            [r["key"], r["requests"], r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"]]
            + [r["free_tokens"], r["training_tokens"], r["compute_seconds"], r["cost_usd"]]
            for r in found["data"]
        ),
    )


def statement(
    org: Org,
    month: Annotated[str, typer.Argument(help="YYYY-MM (UTC calendar month).")],
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of JSON.")] = False,
) -> None:
    """The monthly statement of one organization (JSON, or CSV for a spreadsheet)."""
    with connect() as client:
        url = path("admin", "orgs", org, "statements", month)
        r = client.request("GET", url, params={"format": "csv" if csv else "json"})
    if csv:
        typer.echo(r.text, nl=False)
    else:
        print_json(r.json())


def ledger(org: Org, days: Days = 30, json: Json = False) -> None:
    """Every ledger entry of one organization: credits, charges, adjustments."""
    with connect() as client:
        found = client.get(path("admin", "orgs", org, "ledger"), **_range(days))
    if json:
        print_json(found)
        return
    print_table(
        ["id", "when", "kind", "amount $", "reference", "note"],
        (
            [e["id"], when(e["created_at"]), e["kind"], e["amount_usd"], e["reference"], e["note"]]
            for e in found["data"]
        ),
    )
