"""`yun models`: the catalog of the server the CLI is logged in to."""

from __future__ import annotations

from typing import Annotated

import typer

from yun.cli._client import connect, path
from yun.cli._common import CliError
from yun.cli._output import print_json, print_table, say

__all__ = ["models_app"]

models_app = typer.Typer(help="The model catalog: list, show, add, remove.", no_args_is_help=True)

ModelId = Annotated[str, typer.Argument(help="Model id, as clients put it in `model`.")]
Json = Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")]
# Adding from the hub downloads the weights before the server answers.
_ADD_TIMEOUT_S = 3600.0


@models_app.command("list")
def models_list(json: Json = False) -> None:
    """Every model with its card and whether it is being served."""
    with connect() as client:
        found = client.get("/admin/models")
    if json:
        print_json(found)
        return
    rows = []
    for m in found["data"]:
        c = m["card"]
        rows.append(
            [m["id"], m["kind"], m["status"], c.get("family"), c.get("parameters"), c.get("context_length")]
            + [c.get("quantization"), c.get("license"), m["source"]]
        )
    print_table(["id", "kind", "status", "family", "params", "context", "quant", "license", "source"], rows)


@models_app.command("show")
def models_show(model_id: ModelId, json: Json = False) -> None:
    """One model: where it comes from, whether it is served, and its card."""
    with connect() as client:
        m = client.get(path("admin", "models", model_id))
    if json:
        print_json(m)
        return
    where = m["path"] or m["url"] or ""
    lines = [
        ("id", m["id"]),
        ("kind", m["kind"]),
        ("source", f"{m['source']} {where}".strip()),
        ("status", f"{m['status']} ({m['healthy_replicas']}/{m['replicas']} replicas healthy)"),
    ]
    lines += [(k, v) for k, v in m["card"].items() if v not in (None, "") and k not in ("kind", "source")]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        say(f"{k.ljust(width)}  {v}")


@models_app.command("add")
def models_add(
    model_id: Annotated[str, typer.Argument(help="Name clients will use in `model`.")],
    file: Annotated[
        str | None,
        typer.Option("--file", help="A GGUF file on the SERVER's machine (a path there, not on this one)."),
    ] = None,
    hub: Annotated[
        str | None, typer.Option("--hub", help="Hugging Face repo id; the server downloads it (needs a network).")
    ] = None,
    hub_file: Annotated[str | None, typer.Option("--hub-file", help="GGUF file name inside the hub repo.")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Base URL of an external OpenAI-compatible server (vLLM, SGLang, …).")
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option("--upstream-model", help="Model name at the external server [default: MODEL_ID].")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key for the external server (stored, never shown).")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="chat or embedding.")] = "chat",
    license: Annotated[str | None, typer.Option("--license", help="License to show on the card.")] = None,
    context: Annotated[
        int | None,
        typer.Option(
            "--context", help="Tokens per request (prompt + output) for this model [default: engine.context_per_slot]."
        ),
    ] = None,
) -> None:
    """Register a model; the running server deploys it within seconds."""
    if sum(x is not None for x in (file, hub, url)) != 1:
        raise CliError("give exactly one of --file, --hub (with --hub-file) or --url")
    body = {
        "id": model_id,
        "kind": kind,
        "file": file,
        "hub": hub,
        "hub_file": hub_file,
        "url": url,
        "upstream_model": upstream_model,
        "api_key": api_key,
        "license": license,
        "context": context,
    }
    with connect() as client:
        m = client.post("/admin/models", {k: v for k, v in body.items() if v is not None}, timeout=_ADD_TIMEOUT_S)
    say(f"added {m['id']} ({m['kind']}, {m['source']})")


@models_app.command("remove")
def models_remove(model_id: ModelId) -> None:
    """Remove a model; the server stops its replicas (its price history stays)."""
    with connect() as client:
        client.delete(path("admin", "models", model_id))
    say(f"removed {model_id}")
