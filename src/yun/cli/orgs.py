"""`yun orgs` and `yun members`: organizations (tenants), their limits and their people."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from yun.cli._client import connect, path
from yun.cli._output import print_json, print_table, say, when

__all__ = ["members_app", "orgs_app"]

orgs_app = typer.Typer(help="Organizations (tenants): create, list, show, set limits.", no_args_is_help=True)
members_app = typer.Typer(help="People in an organization and their roles.", no_args_is_help=True)

Org = Annotated[str, typer.Argument(help="Organization id or name.")]
Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]
Rpm = Annotated[int | None, typer.Option("--rpm", help="Requests per minute for the whole org [default: unlimited].")]
Tpm = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute for the whole org [default: unlimited].")]


def _limit(value: Any) -> str:
    return "unlimited" if value is None else str(value)


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Argument(help="A unique name; commands accept it wherever an org id goes.")],
    rpm: Rpm = None,
    tpm: Tpm = None,
) -> None:
    """Create an organization and print its id."""
    with connect() as client:
        org = client.post("/admin/orgs", {"name": name, "rpm_limit": rpm, "tpm_limit": tpm})
    say(org["id"])


@orgs_app.command("list")
def orgs_list(json: Json = False) -> None:
    """Every organization with its limits and balance (USD)."""
    with connect() as client:
        orgs = client.get("/admin/orgs")
    if json:
        print_json(orgs)
        return
    print_table(
        ["id", "name", "rpm", "tpm", "balance $", "held $"],
        (
            [o["id"], o["name"], _limit(o["rpm_limit"]), _limit(o["tpm_limit"])]
            + [f"{o['balance']['balance']:.6f}", f"{o['balance']['held']:.6f}"]
            for o in orgs["data"]
        ),
    )


@orgs_app.command("show")
def orgs_show(org: Org, json: Json = False) -> None:
    """One organization: id, name, limits and balance."""
    with connect() as client:
        found = client.get(path("admin", "orgs", org))
    if json:
        print_json(found)
        return
    b = found["balance"]
    say(f"id        {found['id']}\nname      {found['name']}\ncreated   {when(found['created_at'])}")
    say(f"rpm       {_limit(found['rpm_limit'])}\ntpm       {_limit(found['tpm_limit'])}")
    say(f"weight    {found['weight']:g}")
    say(f"balance   ${b['balance']:.9f} (held ${b['held']:.9f}, available ${b['available']:.9f})")


@orgs_app.command("limits")
def orgs_limits(
    org: Org,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute (omit for unlimited).")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute (omit for unlimited).")] = None,
) -> None:
    """Set an organization's rate limits (both at once; an omitted one becomes unlimited)."""
    with connect() as client:
        done = client.put(path("admin", "orgs", org, "limits"), {"rpm_limit": rpm, "tpm_limit": tpm})
    say(f"{done['id']}: rpm={_limit(done['rpm_limit'])} tpm={_limit(done['tpm_limit'])}")


@orgs_app.command("weight")
def orgs_weight(
    org: Org,
    weight: Annotated[float, typer.Argument(help="Share of a busy model's slots (default 1; 2 = twice a 1's).")],
) -> None:
    """Set an organization's weight: while organizations wait for the same busy replicas, each is served
    tokens in proportion to its weight."""
    with connect() as client:
        done = client.put(path("admin", "orgs", org, "weight"), {"weight": weight})
    say(f"{done['id']}: weight={done['weight']:g}")


@members_app.command("list")
def members_list(org: Org, json: Json = False) -> None:
    """The people in an organization and their roles."""
    with connect() as client:
        found = client.get(path("admin", "orgs", org, "members"))
    if json:
        print_json(found)
        return
    rows = ([m["id"], m["email"], m["name"], m["role"]] for m in found["data"])
    print_table(["member id", "email", "name", "role"], rows)


@members_app.command("add")
def members_add(
    org: Org,
    email: Annotated[str, typer.Argument(help="The person's email address.")],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    role: Annotated[str, typer.Option("--role", help="owner, admin, member or billing-viewer.")] = "member",
) -> None:
    """Add a person to an organization with a role."""
    with connect() as client:
        m = client.post(path("admin", "orgs", org, "members"), {"email": email, "name": name, "role": role})
    say(f"{m['id']} {m['email']} is {m['role']}")


@members_app.command("remove")
def members_remove(
    org: Org, member_id: Annotated[str, typer.Argument(help="Member id from `yun members list`.")]
) -> None:
    """Remove a person from an organization (their other organizations keep them)."""
    with connect() as client:
        client.delete(path("admin", "orgs", org, "members", member_id))
    say(f"removed {member_id}")
