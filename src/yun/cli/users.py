"""`yun users`: people across every organization, and the passwords they sign in to the console with."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from yun.cli._client import connect, path
from yun.cli._common import CliError
from yun.cli._output import print_json, print_table, say

__all__ = ["users_app"]

users_app = typer.Typer(help="People across every organization; console passwords.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]
Email = Annotated[str, typer.Argument(help="The person's email address.")]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from stdin (its first line) instead of a prompt."),
]


def _password(from_stdin: bool) -> str:
    """The password from a prompt (not echoed, asked twice), or stdin's first line: never an argument,
    which would land in shell history and in every process listing."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise CliError("no password given")
    return password


@users_app.command("list")
def users_list(json: Json = False) -> None:
    """Every person with a membership, one row per organization they belong to."""
    with connect() as client:
        found = client.get("/admin/users")
    if json:
        print_json(found)
        return
    rows = (
        [u["email"], m["org_id"], m["org_name"], m["member_id"], m["name"], m["role"]]
        for u in found["data"]
        for m in u["memberships"]
    )
    print_table(["email", "org", "org name", "member id", "name there", "role"], rows)


@users_app.command("create")
def users_create(
    email: Email,
    org: Annotated[str, typer.Option("--org", help="Organization id or name.")],
    role: Annotated[str, typer.Option("--role", help="owner, admin, member or billing-viewer.")] = "member",
    password_stdin: PasswordStdin = False,
) -> None:
    """A person who signs in to the console at /console with this email and a password (asked for)."""
    password = _password(password_stdin)
    with connect() as client:
        made = client.post("/admin/users", {"email": email, "org": org, "role": role, "password": password})
    say(f"created {made['email']} ({made['role']} of {made['org_id']}); they sign in at /console")


@users_app.command("passwd")
def users_passwd(email: Email, password_stdin: PasswordStdin = False) -> None:
    """Set a person's password (asked for): lifts a lockout and signs out every session of theirs."""
    password = _password(password_stdin)
    with connect() as client:
        client.put(path("admin", "users", email, "password"), {"password": password})
    say(f"password set for {email}")


@users_app.command("invite")
def users_invite(
    email: Email,
    org: Annotated[str, typer.Option("--org", help="Organization id or name.")],
    role: Annotated[str, typer.Option("--role", help="owner, admin, member or billing-viewer.")] = "member",
    json: Json = False,
) -> None:
    """Invite a person to an organization: prints a single-use, expiring link (shown once) where they set
    a password and are signed in. Send it to them yourself."""
    with connect() as client:
        made = client.post(path("admin", "orgs", org, "invitations"), {"email": email, "role": role})
    if json:
        print_json(made)
        return
    who = f"{made['email']} as {made['role']} of {made['org_id']}"
    say(f"invited {who}; the link works once, until {made['expires_at']}:")
    typer.echo(made["url"])
