"""The console in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright from PyPI,
against a live `yun serve` with the tiny model. `playwright install` is never run; without the binary the
tests skip, naming it."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityServer]:
    """A priced `yun serve` with the tiny model, stopped after the module's tests."""
    server = ReliabilityServer(tmp_path_factory.mktemp("console-server"))
    try:
        server.start()
        server.set_price()
        yield server
    finally:
        server.stop()
