"""`yun serve`."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from yun.cli._common import Database, DataDir, settings_for
from yun.settings import Settings


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    data_dir: DataDir = None,
    database: Database = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (0.0.0.0: every interface) [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port, 1-65535 [default: 8000].")] = None,
    redis: Annotated[
        str | None, typer.Option("--redis", help="Redis URL for rate limits shared by several gateways.")
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="all: gateway + controller in one process; gateway: serve requests from the replica registry "
            "(several, behind a load balancer); controller: place replicas (one active, others stand by).",
        ),
    ] = "all",
    cluster: Annotated[
        str,
        typer.Option("--cluster", help="Where replicas run: local (this machine), ray://HOST:PORT or auto (Ray)."),
    ] = "local",
    default_models: Annotated[
        bool,
        typer.Option(
            "--default-models/--no-default-models",
            help="Serve the bundled Qwen chat and MiniLM embedding models.",
        ),
    ] = True,
) -> None:
    """Run Yun: the OpenAI-compatible gateway, its replicas and the admin API, on one machine.

    The first start creates the database (SQLite in the data dir unless --database says otherwise)
    and prints a platform-admin key once: give it to `yun login`."""
    from yun.cli._serving import bind_socket, lock_data_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "gguf", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = settings_for(
        data_dir=data_dir,
        database_url=database,
        redis_url=redis,
        server={"host": host, "port": port},
        cluster={"role": role, "backend": cluster},
        defaults=None if default_models else {"chat": False, "embedding": False},
    )
    # Before anything is touched (database, holds, model processes), a start that cannot serve stops here:
    # the data dir in use by another `yun serve`, or the port taken (CannotServe: one line, exit status 1).
    lock = lock_data_dir(settings.data_dir)
    try:
        sock = bind_socket(settings.server.host, settings.server.port)
    except BaseException:
        lock.close()
        raise
    try:
        _serve(settings, sock)
    finally:
        sock.close()
        lock.close()


def _serve(settings: Settings, sock: socket.socket) -> None:
    import uvicorn

    from yun.api import bootstrap, build_services, create_app
    from yun.cli._serving import AnnouncingServer, bound_port

    port = bound_port(sock)
    backend = None
    if settings.cluster.role != "gateway":
        import asyncio

        from yun.api.control import make_backend

        # The compute first: a Ray address that does not answer is one line here, before any database row
        # or model is touched (EngineUnavailable, exit status 1).
        backend = make_backend(settings)
        asyncio.run(backend.start())

    services = build_services(settings)
    services.backend = backend
    # Engine secrets in the registry are sealed with the installation's key: a gateway given another key
    # could route nowhere. One line (SecretKeyError) now rather than failures at every refresh.
    services.registry.live()
    services.exclusive = _database_in(settings)
    secret = bootstrap(services)
    if secret is not None:
        Console().print(
            Panel(
                f"[bold]{secret}[/bold]\n\nThis platform-admin API key is shown only now; Yun keeps only "
                f"its hash. Store it somewhere safe, then: yun login http://{_local(settings)}:{port}",
                title="bootstrap admin key",
            )
        )
    _prepare_models(services, settings)
    url = f"http://{settings.server.host}:{port}/v1"
    config = uvicorn.Config(
        create_app(settings, services),
        log_level="warning",
        access_log=False,
        # X-Forwarded-For/-Proto are read only from the load balancers the operator trusts (the console's
        # sign-in limit counts client addresses); with none, that middleware is not on the request path.
        proxy_headers=bool(settings.server.trusted_proxies),
        forwarded_allow_ips=settings.server.trusted_proxies or None,
    )
    # "listening" is printed once the server accepts connections on `sock`, never before.
    server = AnnouncingServer(config, lambda: Console().print(f"Yun listening on {url} (data in {settings.data_dir})"))
    server.run(sockets=[sock])


def _database_in(settings: Settings) -> bool:
    """Whether the database is a SQLite file inside the locked data dir: then no other gateway can be
    alive on it, and every hold left open there is a dead process's."""
    url = settings.resolved_database_url
    if not url.startswith("sqlite"):
        return False
    path = url.split("///", 1)[-1]
    return bool(path) and path != ":memory:" and Path(path).resolve().parent == settings.data_dir.resolve()


def _local(settings: Settings) -> str:
    host = settings.server.host
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - naming, not binding


class _AmountColumn(ProgressColumn):
    """Bytes for a copy ("310.2/491.4 MB"), a percentage for a conversion (its steps are no unit)."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._percent = TaskProgressColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._bytes.render(task)
        return self._percent.render(task)


def _prepare_models(services: Any, settings: Settings) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(what: str, done: int, total: int, unit: str = "bytes") -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total, unit=unit)
            progress.update(tasks[what], completed=done, total=total)

        services.catalog.ensure_bundled(
            chat=settings.defaults.chat, embedding=settings.defaults.embedding, progress=report
        )
