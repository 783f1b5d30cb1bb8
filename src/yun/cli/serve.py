"""`yun serve`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from yun.cli._common import Database, DataDir, err, fail, out, services_for, settings_for
from yun.errors import YunError
from yun.settings import Settings


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    data_dir: DataDir = None,
    database: Database = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL for rate limits shared by several gateways.")] = None,
    no_default_models: Annotated[bool, typer.Option(help="Do not serve the bundled models.")] = False,
) -> None:
    """Run the gateway with the embedded defaults: SQLite, the bundled Qwen chat and MiniLM embedding models."""
    from yun.cli._serving import AnnouncingServer, CannotServe, bind_socket, bound_port, lock_data_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "gguf", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = settings_for(data_dir, database, host=host, port=port)
    if redis is not None:
        settings = settings.model_copy(update={"redis_url": redis})
    if no_default_models:
        settings = settings.model_copy(
            update={"defaults": settings.defaults.model_copy(update={"chat": False, "embedding": False})}
        )
    try:
        # Before anything is touched (database, holds, model processes): a start that cannot serve stops here.
        lock = lock_data_dir(settings.data_dir)
        sock = bind_socket(settings.server.host, settings.server.port)
    except CannotServe as exc:
        raise fail(exc) from exc
    import uvicorn

    from yun.api import bootstrap, create_app

    try:
        services = services_for(settings)
        services.exclusive = _database_in(settings)
        secret = bootstrap(services)
        if secret is not None:
            out().print(
                Panel(
                    f"[bold]{secret}[/bold]\n\nThis platform-admin API key is shown only now; Yun keeps only "
                    "its hash. Store it somewhere safe.",
                    title="bootstrap admin key",
                )
            )
        _prepare_models(services, settings)
    except YunError as exc:
        sock.close()
        lock.close()
        raise fail(exc) from exc
    url = f"http://{settings.server.host}:{bound_port(sock)}/v1"
    config = uvicorn.Config(
        create_app(settings, services),
        log_level="warning",
        access_log=False,
        # Yun reads no client address (no IP allow-lists, no access log), so X-Forwarded-* parsing,
        # one more middleware on every request, buys nothing.
        proxy_headers=False,
    )
    server = AnnouncingServer(config, lambda: out().print(f"Yun listening on {url} (data in {settings.data_dir})"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        lock.close()


def _database_in(settings: Settings) -> bool:
    """Whether the database is a SQLite file inside the locked data dir: then no other gateway can be
    alive on it, and every hold left open there is a dead process's."""
    url = settings.resolved_database_url
    if not url.startswith("sqlite"):
        return False
    path = url.split("///", 1)[-1]
    return bool(path) and path != ":memory:" and Path(path).resolve().parent == settings.data_dir.resolve()


def _prepare_models(services: Any, settings: Settings) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err(),
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
