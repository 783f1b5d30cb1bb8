"""`yun login`, `yun logout`, `yun status`: which server the CLI manages, and how it is doing."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from yun.cli._client import AdminClient, Login, connect, forget_login, save_login
from yun.cli._common import CliError, settings_for
from yun.cli._output import print_json, print_table, say

__all__ = ["register"]

Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("status")(status)


def login(
    url: Annotated[str, typer.Argument(help="The Yun server, e.g. http://127.0.0.1:8000 (what `yun serve` printed).")],
) -> None:
    """Remember a server and its platform-admin key for the commands that follow.

    The key is asked for (not echoed), or read from stdin when stdin is not a terminal
    (`yun login URL < key.txt`). Both are stored in ~/.config/yun/login.json, readable by you only;
    YUN_URL and YUN_API_KEY override them."""
    settings = settings_for(url=url)
    assert settings.url is not None
    if sys.stdin.isatty():
        key = typer.prompt("Platform-admin API key (yun-…)", hide_input=True)
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise CliError("no API key given")
    with AdminClient(settings.url, key) as client:
        client.get("/admin/orgs")  # a wrong, revoked or tenant key is refused here, not stored
    where = save_login(settings, Login(settings.url, key))
    say(f"logged in to {settings.url} (saved in {where})")


def logout() -> None:
    """Forget the server and key `yun login` stored."""
    gone = forget_login(settings_for())
    say(f"logged out of {gone.url}" if gone else "not logged in")


def status(json: Json = False) -> None:
    """The server's models and their replicas: health, queue depth, work in flight (like `ollama ps`)."""
    with connect() as client:
        health = client.get("/health")
        catalog = {m["id"]: m for m in client.get("/admin/models")["data"]}
    if json:
        print_json({"url": client.url, "health": health, "models": list(catalog.values())})
        return
    say(f"Yun at {client.url}: {health.get('status', 'unknown')}")
    rows: list[list[Any]] = []
    deployed: dict[str, Any] = health.get("models", {})
    for model_id in sorted(catalog.keys() | deployed.keys()):
        d = deployed.get(model_id, {})
        replicas = d.get("replicas", [])
        kind = catalog.get(model_id, {}).get("kind", "")
        if not replicas:
            rows.append([model_id, kind, "", "not deployed", "", "", d.get("queued", "")])
        for r in replicas:
            state = "healthy" if r.get("healthy") else r.get("state", "")
            rows.append(
                [model_id, kind, r.get("name"), state, r.get("outstanding"), r.get("restarts"), d.get("queued", 0)]
            )
    print_table(["model", "kind", "replica", "state", "in flight", "restarts", "queued"], rows)
