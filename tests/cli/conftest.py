"""The `yun` CLI against a real Yun server: uvicorn on loopback in a thread of its own (the CLI is a
synchronous HTTP client, so the server cannot share the test's thread), real SQLite, no mocks.

Every test gets a CLI environment of its own: YUN_URL / YUN_API_KEY naming the server, and an empty
XDG config dir (so `yun login` writes there and no operator's real login leaks in).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from yun.api import build_services, create_app
from yun.cli import app as cli_app
from yun.settings import Settings
from yun.tenancy import DEFAULT_ORG

HEALTH_INTERVAL_S = 0.3
SYNC_INTERVAL_S = 2 * HEALTH_INTERVAL_S
"""How often the live server's catalog sync runs (api/lifespan.py: every two health intervals)."""


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
        engine={"parallel": 1, "context_per_slot": 512, "health_interval_s": HEALTH_INTERVAL_S},
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


T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout_s: float = 120.0) -> T:
    """Poll `check` until it returns something truthy, and return that (the controller acts on a change
    within a second or so; the bound is for a busy machine, never a measured time)."""
    for _ in range(int(timeout_s / 0.1)):
        found = check()
        if found:
            return found
        threading.Event().wait(0.1)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


@dataclass
class Deployable:
    """A local model of the live server's catalog that deployments can name, and the shared deployment the
    controller made for it (one replica, ready)."""

    model: str
    default: str


NO_ENGINE = ["false"]
"""An engine command that exits at once: deployments the tests scale up fail to place, cheaply, instead of
loading models on a 2-core machine (tests of the records do not need engines to run)."""


@pytest.fixture(scope="package")
def deployable(live_server: LiveServer, tiny_model: Path) -> Iterator[Deployable]:
    """The tiny model, registered once for the package and left in the catalog: the controller deploys it
    (one shared replica) before any test uses it, and stops it with the server. The deployments the tests
    made with it go at the end."""
    model = "dep-tiny"
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=live_server.url, headers=headers, trust_env=False, timeout=60) as http:
        r = http.post("/admin/models", json={"id": model, "file": str(tiny_model)})
        assert r.status_code == 201, r.text

        def ready() -> list[str]:
            found = http.get("/admin/deployments", params={"model": model}).json()["data"]
            return [d["id"] for d in found if d["ready"] == 1]

        [default] = until(ready, f"a ready shared deployment of {model}")
        try:
            yield Deployable(model, default)
        finally:
            for d in http.get("/admin/deployments", params={"model": model}).json()["data"]:
                if d["id"] != default:
                    http.delete(f"/admin/deployments/{d['id']}")
