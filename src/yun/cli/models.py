"""`yun models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from yun.catalog import served_card
from yun.cli._common import Database, DataDir, err, fail, out, services_for, settings_for
from yun.errors import YunError

models_app = typer.Typer(help="The model catalog.", no_args_is_help=True)


@models_app.command("list")
def models_list(data_dir: DataDir = None, database: Database = None) -> None:
    settings = settings_for(data_dir, database)
    services = services_for(settings)
    table = Table("id", "kind", "family", "params", "context", "quant", "license", "source")
    for m in services.catalog.list():
        c = served_card(m, settings.engine.context_per_slot)
        table.add_row(
            m.id,
            m.kind,
            str(c.get("family") or ""),
            str(c.get("parameters") or ""),
            str(c.get("context_length") or ""),
            str(c.get("quantization") or ""),
            str(c.get("license") or ""),
            m.source,
        )
    out().print(table)


@models_app.command("show")
def models_show(model_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    settings = settings_for(data_dir, database)
    try:
        m = services_for(settings).catalog.get(model_id)
    except YunError as exc:
        raise fail(exc) from exc
    served = served_card(m, settings.engine.context_per_slot)
    card = {"id": m.id, "kind": m.kind, "source": m.source, "path": m.path, "url": m.url, **served}
    out().print_json(json.dumps(card, default=str))


@models_app.command("add")
def models_add(
    model_id: Annotated[str, typer.Argument(help="Name clients will use in `model`.")],
    file: Annotated[Path | None, typer.Option(help="A local GGUF file.")] = None,
    hub: Annotated[str | None, typer.Option(help="Hugging Face repo id (needs a network).")] = None,
    hub_file: Annotated[str | None, typer.Option(help="GGUF file name inside the hub repo.")] = None,
    url: Annotated[str | None, typer.Option(help="Base URL of an external OpenAI-compatible server.")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="Model name at the external server.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key for the external server.")] = None,
    kind: Annotated[str, typer.Option(help="chat or embedding")] = "chat",
    license: Annotated[str | None, typer.Option(help="License to show on the card.")] = None,
    context: Annotated[
        int | None,
        typer.Option(help="Tokens per request (prompt + output) for this model; default: engine.context_per_slot."),
    ] = None,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """Register a model; a running `yun serve` picks it up within seconds."""
    if kind not in ("chat", "embedding") or sum(x is not None for x in (file, hub, url)) != 1:
        err().print("give exactly one of --file, --hub (with --hub-file) or --url; --kind is chat or embedding")
        raise typer.Exit(2)
    catalog = services_for(settings_for(data_dir, database)).catalog
    try:
        if file is not None:
            m = catalog.add_local(model_id, file, kind, license=license, context=context)
        elif hub is not None:
            if not hub_file:
                err().print("--hub needs --hub-file")
                raise typer.Exit(2)
            m = catalog.add_hub(model_id, hub, hub_file, kind, context=context)
        else:
            assert url is not None
            m = catalog.add_external(
                model_id, url, upstream_model=upstream_model, api_key=api_key, kind=kind, context_length=context
            )
    except YunError as exc:
        raise fail(exc) from exc
    out().print(f"added {m.id} ({m.kind}, {m.source})")


@models_app.command("remove")
def models_remove(model_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    try:
        services_for(settings_for(data_dir, database)).catalog.remove(model_id)
    except YunError as exc:
        raise fail(exc) from exc
    out().print(f"removed {model_id}")
