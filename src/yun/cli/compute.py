"""`yun prices compute` (compute prices per resource shape) and `yun economics` (revenue against compute cost)."""

from __future__ import annotations

from typing import Annotated

import typer

from yun.cli._client import connect, path
from yun.cli._output import print_json, print_table, say, when

__all__ = ["compute_prices_app", "economics"]

compute_prices_app = typer.Typer(
    help="Versioned compute prices per resource shape (USD per replica-hour): the operator's cost and the "
    "dedicated price.",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]


@compute_prices_app.command("set")
def compute_prices_set(
    shape: Annotated[str, typer.Argument(help="Resource shape, e.g. cpu1 or cpu8-gpu1-mem32768.")],
    cost: Annotated[
        str | None, typer.Option("--cost", help="USD per replica-hour the compute costs the operator.")
    ] = None,
    price: Annotated[
        str | None,
        typer.Option("--price", help="USD per replica-hour an organization pays for a dedicated deployment."),
    ] = None,
) -> None:
    """Add a compute price version of a shape (one left out keeps its current value); compute metered
    before keeps the version it was priced at."""
    body = {k: v for k, v in (("cost", cost), ("price", price)) if v is not None}
    with connect() as client:
        p = client.put(path("admin", "compute-prices", shape), body)
    say(f"{shape}: compute price version {p['version']} (cost ${p['cost']}, price ${p['price']} per replica-hour)")


@compute_prices_app.command("list")
def compute_prices_list(
    shape: Annotated[
        str | None, typer.Argument(help="A shape: its whole price history [default: current price of every shape].")
    ] = None,
    json: Json = False,
) -> None:
    """Current compute prices of every shape, or every version of one shape's."""
    with connect() as client:
        found = client.get("/admin/compute-prices" if shape is None else path("admin", "compute-prices", shape))
    if json:
        print_json(found)
        return
    print_table(
        ["shape", "version", "cost $/h", "price $/h", "since"],
        ([p["shape"], p["version"], p["cost"], p["price"], when(p["created_at"])] for p in found["data"]),
    )


def economics(
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="The last N UTC days, today included.")] = 30,
    by: Annotated[str, typer.Option("--by", help="Per model or per org.")] = "model",
    json: Json = False,
) -> None:
    """Revenue (tokens, training and dedicated compute) against the operator's compute cost (replicas and
    training runs), per day and model or org."""
    with connect() as client:
        found = client.get("/admin/economics", days=days, by=by)
    if json:
        print_json(found)
        return
    key = "model" if by == "model" else "org_id"
    print_table(
        ["day", "model" if by == "model" else "org", "tokens $", "training $", "compute $", "revenue $", "cost $"]
        + ["margin $", "replica-s", "training-s"],
        (
            [r["day"], r[key] if r[key] is not None else "(shared)", r["token_revenue_usd"], r["training_revenue_usd"]]
            + [r["compute_revenue_usd"], r["revenue_usd"], r["cost_usd"], r["margin_usd"], r["replica_seconds"]]
            + [r["training_seconds"]]
            for r in found["data"]
        ),
    )
    t = found["totals"]
    say(f"total: revenue ${t['revenue_usd']}, compute cost ${t['cost_usd']}, margin ${t['margin_usd']}")
