"""The console in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright from PyPI,
against a live `yun serve` with the tiny model. `playwright install` is never run; without the binary the
tests skip, naming it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import ReliabilityServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # bounds for a busy 2-core machine, never measured times
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
"""Screenshots of each page at 1280x800 and 390x844 (git ignores tests/artifacts/)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def priced_server(directory: Path, **env: str) -> Iterator[ReliabilityServer]:
    """A `yun serve` with the tiny model, priced, with `env` added to its environment; stopped after."""
    server = ReliabilityServer(directory)
    server.env.update(env)
    try:
        server.start()
        server.set_price()
        yield server
    finally:
        server.stop()


def admin_sign_in(page: Any, server: ReliabilityServer) -> None:
    """Sign in on the page's Admin API key tab with the server's bootstrap key."""
    page.goto(server.url + "/console/sign-in")
    page.get_by_role("tab", name="Admin API key").click()
    assert server.admin_key is not None
    page.get_by_label("Admin API key").fill(server.admin_key)
    page.get_by_role("button", name="Sign in with key").click()
    page.get_by_role("heading", name="Overview").wait_for(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityServer]:
    """A priced `yun serve` with the tiny model, stopped after the module's tests."""
    with priced_server(tmp_path_factory.mktemp("console-server")) as server:
        yield server
