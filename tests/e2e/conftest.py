"""The e2e tier's server: `yun serve` as a subprocess with the real bundled models (one per module), and
the official `openai` client on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.server import Health, YunServer

CHAT = "qwen2.5-coder-0.5b-instruct"
EMBED = "all-minilm-l6-v2"


def _both_models(health: Health) -> bool:
    return health.get("status") == "ok" and len(health.get("models", {})) == 2


def serve_default(root: Path, **kwargs: Any) -> YunServer:
    """`yun serve` with the default (bundled) models."""
    return YunServer(root, ready=_both_models, start_timeout_s=300, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YunServer]:
    server = serve_default(tmp_path_factory.mktemp("e2e"))
    try:
        server.start()  # asserts that the bootstrap key is printed exactly once
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(server: YunServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=server.admin_key, base_url=server.url + "/v1", max_retries=0, timeout=300) as c:
        yield c
