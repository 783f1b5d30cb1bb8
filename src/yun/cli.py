"""`yun` command line: serve, keys, models."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from yun.errors import YunError
from yun.settings import Settings

__all__ = ["main"]

app = typer.Typer(help="Yun: an open-model AI cloud.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
models_app = typer.Typer(help="The model catalog.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")


def _out() -> Console:
    # Built per call so that COLUMNS and the current stdout (tests, pipes) are honoured.
    return Console()


def _err() -> Console:
    return Console(stderr=True)


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (database, model cache).")]
Database = Annotated[str | None, typer.Option("--database", help="SQLAlchemy URL (default: SQLite in data dir).")]


def _settings(data_dir: Path | None, database: str | None, **server: Any) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database is not None:
        overrides["database_url"] = database
    base = Settings()
    if server:
        overrides["server"] = base.server.model_copy(update={k: v for k, v in server.items() if v is not None})
    return base.model_copy(update=overrides) if overrides else base


def _services(settings: Settings) -> Any:
    from yun.api import build_services

    return build_services(settings)


def _fail(exc: YunError) -> typer.Exit:
    _err().print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(2)


@app.command()
def serve(
    data_dir: DataDir = None,
    database: Database = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    no_default_models: Annotated[bool, typer.Option(help="Do not serve the bundled models.")] = False,
) -> None:
    """Run the gateway with the embedded defaults: SQLite, the bundled Qwen chat and MiniLM embedding models."""
    import uvicorn

    from yun.api import create_app
    from yun.tenancy import DEFAULT_ORG

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "gguf", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = _settings(data_dir, database, host=host, port=port)
    if no_default_models:
        settings = settings.model_copy(
            update={"defaults": settings.defaults.model_copy(update={"chat": False, "embedding": False})}
        )
    try:
        services = _services(settings)
        services.orgs.get_or_create(DEFAULT_ORG, "default")
        if services.keys._keys.count() == 0:
            issued = services.keys.issue(DEFAULT_ORG, "bootstrap admin", platform_admin=True)
            _out().print(
                Panel(
                    f"[bold]{issued.secret}[/bold]\n\nThis platform-admin API key is shown only now; Yun keeps only "
                    "its hash. Store it somewhere safe.",
                    title="bootstrap admin key",
                )
            )
        _prepare_models(services, settings)
    except YunError as exc:
        raise _fail(exc) from exc
    _out().print(
        f"Yun listening on http://{settings.server.host}:{settings.server.port}/v1 (data in {settings.data_dir})"
    )
    uvicorn.run(
        create_app(settings, services),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
    )


def _prepare_models(services: Any, settings: Settings) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=_err(),
        transient=False,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done, total=total)

        services.catalog.ensure_bundled(
            chat=settings.defaults.chat, embedding=settings.defaults.embedding, progress=report
        )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for people.")],
    admin: Annotated[bool, typer.Option(help="Platform admin key.")] = False,
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """Mint a key; the secret is printed once."""
    from yun.tenancy import DEFAULT_ORG

    services = _services(_settings(data_dir, database))
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    issued = services.keys.issue(DEFAULT_ORG, name, platform_admin=admin)
    _out().print(issued.secret)
    _err().print(f"key id {issued.record.id}; the secret above is not stored and cannot be shown again")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database: Database = None) -> None:
    services = _services(_settings(data_dir, database))
    table = Table("id", "name", "prefix", "admin", "created", "revoked")
    for k in services.keys._keys.list():
        table.add_row(
            k.id,
            k.name,
            k.prefix + "…",
            "yes" if k.is_platform_admin else "",
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    _out().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    try:
        _services(_settings(data_dir, database)).keys.revoke(key_id)
    except YunError as exc:
        raise _fail(exc) from exc
    _out().print(f"revoked {key_id}")


@models_app.command("list")
def models_list(data_dir: DataDir = None, database: Database = None) -> None:
    services = _services(_settings(data_dir, database))
    table = Table("id", "kind", "family", "params", "context", "quant", "license", "source")
    for m in services.catalog.list():
        c = m.card
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
    _out().print(table)


@models_app.command("show")
def models_show(model_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    try:
        m = _services(_settings(data_dir, database)).catalog.get(model_id)
    except YunError as exc:
        raise _fail(exc) from exc
    card = {"id": m.id, "kind": m.kind, "source": m.source, "path": m.path, "url": m.url, **m.card}
    _out().print_json(json.dumps(card, default=str))


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
    data_dir: DataDir = None,
    database: Database = None,
) -> None:
    """Register a model; a running `yun serve` picks it up within seconds."""
    if kind not in ("chat", "embedding") or sum(x is not None for x in (file, hub, url)) != 1:
        _err().print("give exactly one of --file, --hub (with --hub-file) or --url; --kind is chat or embedding")
        raise typer.Exit(2)
    catalog = _services(_settings(data_dir, database)).catalog
    try:
        if file is not None:
            m = catalog.add_local(model_id, file, kind, license=license)
        elif hub is not None:
            if not hub_file:
                _err().print("--hub needs --hub-file")
                raise typer.Exit(2)
            m = catalog.add_hub(model_id, hub, hub_file, kind)
        else:
            assert url is not None
            m = catalog.add_external(model_id, url, upstream_model=upstream_model, api_key=api_key, kind=kind)
    except YunError as exc:
        raise _fail(exc) from exc
    _out().print(f"added {m.id} ({m.kind}, {m.source})")


@models_app.command("remove")
def models_remove(model_id: str, data_dir: DataDir = None, database: Database = None) -> None:
    try:
        _services(_settings(data_dir, database)).catalog.remove(model_id)
    except YunError as exc:
        raise _fail(exc) from exc
    _out().print(f"removed {model_id}")


def main() -> None:
    app()
