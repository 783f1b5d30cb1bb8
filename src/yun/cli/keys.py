"""`yun keys`: API keys of any organization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from yun.cli._client import connect, path
from yun.cli._output import print_json, print_table, say, when

DEFAULT_ORG = "org-default"
"""yun.tenancy.DEFAULT_ORG, not imported: that would load the store (0.2 s) into every admin command."""

__all__ = ["keys_app"]

keys_app = typer.Typer(help="API keys: create (the secret is shown once), list, revoke.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for people, e.g. the app that uses the key.")],
    org: Annotated[str, typer.Option("--org", help="Organization id or name.")] = DEFAULT_ORG,
    role: Annotated[str, typer.Option("--role", help="owner, admin, member or billing-viewer.")] = "member",
    admin: Annotated[bool, typer.Option("--admin", help="A platform-admin key (manages every org).")] = False,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models this key may use [default: all].")
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute for this key.")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute for this key.")] = None,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Expire after this many days [default: never].")
    ] = None,
) -> None:
    """Mint a key and print its secret: shown once, stored only as a hash."""
    body = {
        "name": name,
        "role": role,
        "platform_admin": admin,
        "allowed_models": [m.strip() for m in models.split(",") if m.strip()] if models else None,
        "rpm_limit": rpm,
        "tpm_limit": tpm,
        "expires_at": (datetime.now(UTC) + timedelta(days=expires_days)).isoformat() if expires_days else None,
    }
    with connect() as client:
        issued = client.post(path("admin", "orgs", org, "keys"), body)
    say(issued["secret"])
    typer.echo(f"key id {issued['id']}; the secret above is not stored and cannot be shown again", err=True)


@keys_app.command("list")
def keys_list(
    org: Annotated[str | None, typer.Option("--org", help="Only this organization (id or name).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")] = False,
) -> None:
    """Keys with their full ids (to revoke), never their secrets."""
    with connect() as client:
        found = client.get("/admin/keys", org=org)
    if json:
        print_json(found)
        return
    print_table(
        ["id", "org", "name", "prefix", "role", "models", "rpm", "tpm", "expires", "last used", "revoked"],
        (
            [
                k["id"],
                k["org_id"],
                k["name"],
                k["prefix"] + "…",
                k["role"],
                ",".join(k["allowed_models"]) if k["allowed_models"] else "all",
                k["rpm_limit"],
                k["tpm_limit"],
                when(k["expires_at"]),
                when(k["last_used_at"]),
                when(k["revoked_at"]),
            ]
            for k in found["data"]
        ),
    )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id (key_…) from `yun keys list`.")]) -> None:
    """Revoke a key at once; requests with it are refused from then on."""
    with connect() as client:
        client.delete(path("admin", "keys", key_id))
    say(f"revoked {key_id}")
