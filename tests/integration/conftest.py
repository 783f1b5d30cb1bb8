"""A real Yun app (real SQLite, real xllamacpp replica processes of the tiny model and MiniLM),
driven in-process through httpx's ASGI transport and the official `openai` client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from yun.api import Services, build_services, create_app
from yun.settings import Settings
from yun.tenancy import DEFAULT_ORG

CONTEXT_PER_SLOT = 512
FAKE_TRAINER = Path(__file__).parents[1] / "support" / "fake_trainer.py"


@dataclass
class Harness:
    app: FastAPI
    services: Services
    http: httpx.AsyncClient
    client: openai.AsyncOpenAI
    key: str
    admin_key: str
    base_url: str
    """A real uvicorn server on loopback serving the same app (for disconnects, which ASGITransport hides)."""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def yun(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, minilm_gguf: Path) -> AsyncIterator[Harness]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("yun"),
        defaults={"chat": False, "embedding": False},
        engine={"parallel": 2, "context_per_slot": CONTEXT_PER_SLOT, "health_interval_s": 0.3, "drain_s": 1.0},
        server={"max_body_bytes": 200_000},
        # Fine-tuning jobs run the fake trainer here (seconds, no torch); the real one has its own tests.
        jobs={"trainer_command": [sys.executable, str(FAKE_TRAINER), "--spec", "{spec}", "--events", "{events}"]},
    )
    services = build_services(settings)
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    key = services.keys.issue(DEFAULT_ORG, "tests").secret
    admin_key = services.keys.issue(DEFAULT_ORG, "platform admin", platform_admin=True).secret
    services.catalog.add_local("tiny", tiny_model, "chat", license="apache-2.0")
    services.catalog.add_local("minilm", minilm_gguf, "embedding")
    app = create_app(settings, services)
    async with app.router.lifespan_context(app):
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        transport = httpx.ASGITransport(app=app)
        http = httpx.AsyncClient(transport=transport, base_url="http://yun", headers={"Authorization": f"Bearer {key}"})
        client = openai.AsyncOpenAI(
            api_key=key, base_url="http://yun/v1", http_client=httpx.AsyncClient(transport=transport), max_retries=0
        )
        yield Harness(app, services, http, client, key, admin_key, f"http://127.0.0.1:{port}")
        await client.close()
        await http.aclose()
        server.should_exit = True
        await serving
