"""The `yun` CLI against a real Yun server: uvicorn on loopback in a thread of its own (the CLI is a
synchronous HTTP client, so the server cannot share the test's thread), real SQLite, no mocks.

Every test gets a CLI environment of its own: YUN_URL / YUN_API_KEY naming the server, and an empty
XDG config dir (so `yun login` writes there and no operator's real login leaks in).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from yun.api import build_services, create_app
from yun.cli import app as cli_app
from yun.settings import Settings
from yun.store import Database
from yun.tenancy import DEFAULT_ORG


@dataclass
class LiveServer:
    url: str
    admin_key: str
    tenant_key: str
    data_dir: Path


@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("cli-server")
    settings = Settings(
        data_dir=data_dir,
        defaults={"chat": False, "embedding": False},
        engine={"parallel": 1, "context_per_slot": 512, "health_interval_s": 0.3},
    )
    services = build_services(settings)
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    admin_key = services.keys.issue(DEFAULT_ORG, "bootstrap admin", platform_admin=True).secret
    tenant_key = services.keys.issue(DEFAULT_ORG, "tenant").secret
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, services), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="yun-cli-test-server", daemon=True)
    thread.start()
    for _ in range(6000):  # bounded: 60 s
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    assert server.started, "the test server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", admin_key, tenant_key, data_dir)
    finally:
        server.should_exit = True
        thread.join(60)


@dataclass
class Cli:
    runner: CliRunner

    def run(self, *args: str, input: str | None = None) -> str:
        """Run `yun ARGS`; it must succeed. Returns stdout."""
        result = self.runner.invoke(cli_app, list(args), input=input)
        assert result.exit_code == 0, f"yun {' '.join(args)} -> {result.exit_code}: {result.output}{result.stderr}"
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.stdout

    def fail(self, *args: str, input: str | None = None) -> str:
        """Run `yun ARGS`; it must fail with one clear line and no traceback. Returns that line."""
        result = self.runner.invoke(cli_app, list(args), input=input)
        assert result.exit_code != 0, f"yun {' '.join(args)} succeeded: {result.output}"
        assert isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}"
        assert "Traceback" not in result.output
        return result.stderr.strip()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No YUN_* settings from the outside, an empty config dir and wide terminal-less output."""
    for name in [n for n in os.environ if n.startswith("YUN_") and n != "YUN_TEST_CACHE"]:
        monkeypatch.delenv(name)
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return config / "yun"


@pytest.fixture
def cli(live_server: LiveServer, cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI pointed at the live server with its admin key, through YUN_URL and YUN_API_KEY."""
    monkeypatch.setenv("YUN_URL", live_server.url)
    monkeypatch.setenv("YUN_API_KEY", live_server.admin_key)
    return Cli(CliRunner())


@pytest.fixture
def bare_cli(cli_env: Path) -> Cli:
    """The CLI with nothing configured."""
    return Cli(CliRunner())


@dataclass
class Deployable:
    """A local model of the live server's catalog that deployments can name, and the server's database
    (for replica-registry rows, which only the controller writes in production)."""

    model: str
    db: Database


@pytest.fixture(scope="package")
def deployable(live_server: LiveServer, tiny_model: Path) -> Iterator[Deployable]:
    """The tiny model, registered once for the package and left in the catalog: its replica (which today's
    catalog sync starts) is running before any test uses it and stops with the server, never halfway
    through a start or a stop when the server shuts down. The deployments made with it go at the end."""
    model = "dep-tiny"
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    db = Database(f"sqlite:///{live_server.data_dir / 'yun.db'}")
    with httpx.Client(base_url=live_server.url, headers=headers, trust_env=False, timeout=60) as http:
        r = http.post("/admin/models", json={"id": model, "file": str(tiny_model)})
        assert r.status_code == 201, r.text
        for _ in range(600):  # bounded: 120 s
            if http.get("/health").json().get("models", {}).get(model, {}).get("healthy_replicas"):
                break
            threading.Event().wait(0.2)
        else:
            raise AssertionError(f"{model} never became healthy: {http.get('/health').text}")
        try:
            yield Deployable(model, db)
        finally:
            for d in http.get("/admin/deployments", params={"model": model}).json()["data"]:
                http.delete(f"/admin/deployments/{d['id']}")
            db.dispose()
