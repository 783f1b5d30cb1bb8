"""The real app (create_app) in-process, with no models served, on SQLite and on PostgreSQL.

Nothing here starts an engine: admin, organization and model-list endpoints need none, and the
inference endpoints answer 404 model_not_found. Usage is made through the real reserve/settle path.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI

from yun.api import Services, build_services, create_app
from yun.billing.service import Estimate, Outcome
from yun.settings import Settings
from yun.tenancy import DEFAULT_ORG


def api_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, defaults={"chat": False, "embedding": False})


@dataclass
class Api:
    app: FastAPI
    services: Services
    http: httpx.AsyncClient
    admin_key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    async def new_org(self, name: str | None = None, credits: str | None = "10") -> tuple[str, str]:
        """A new organization (with `credits` USD) and an owner key of it."""
        r = await self.http.post(
            "/admin/orgs", json={"name": name or f"org-{uuid.uuid4().hex[:8]}"}, headers=self.auth()
        )
        assert r.status_code == 201, r.text
        org_id = r.json()["id"]
        if credits is not None:
            r = await self.http.post(f"/admin/orgs/{org_id}/credits", json={"amount": credits}, headers=self.auth())
            assert r.status_code == 201, r.text
        r = await self.http.post(f"/admin/orgs/{org_id}/keys", json={"name": "k", "role": "owner"}, headers=self.auth())
        assert r.status_code == 201, r.text
        return org_id, r.json()["secret"]

    async def spend(self, org_id: str, model: str = "m", prompt: int = 10, completion: int = 5) -> str:
        """One request through the real hold and settlement (no engine); returns its request id."""
        request_id = f"req-{uuid.uuid4().hex}"
        billing = self.services.billing
        hold = await billing.reserve(request_id, org_id, "key-x", model, "chat", Estimate(prompt, completion))
        _, done = billing.settle(hold, Outcome("replica-0", prompt, completion, 0, "ok", 0.1, 0.05))
        assert await billing.written(done)
        return request_id

    async def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params or None, headers=self.auth(key))


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    """The real app on `settings`, its lifespan running, with a platform-admin key."""
    services = build_services(settings)
    services.orgs.get_or_create(DEFAULT_ORG, "default")
    admin_key = services.keys.issue(DEFAULT_ORG, "platform admin", platform_admin=True).secret
    app = create_app(settings, services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://yun") as http:
            yield Api(app, services, http, admin_key)


@pytest_asyncio.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(api_settings(tmp_path / "data", database_url)) as api:
        yield api
