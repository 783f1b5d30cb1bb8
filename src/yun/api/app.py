"""The app factory. Services are built once and kept on `app.state`; nothing is global."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from yun.api.admin.router import router as admin_router
from yun.api.errors import install_error_handlers
from yun.api.lane import InferenceLane
from yun.api.lifespan import lifespan
from yun.api.limits import BodyLimit
from yun.api.openai.chat.router import chat_completions
from yun.api.openai.completions.router import completions
from yun.api.openai.embeddings.router import embeddings
from yun.api.openai.models.router import router as models_router
from yun.api.ops import router as ops_router
from yun.api.organization.router import router as organization_router
from yun.api.services import Services, build_services
from yun.settings import Settings

__all__ = ["YunApp", "create_app"]


class YunApp(FastAPI):
    """FastAPI, except that the inference endpoints go straight to the inference lane (api/lane.py)."""

    lane: InferenceLane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.lane.handler(scope)
        if handler is not None:
            await self.lane(scope, receive, send, handler)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, services: Services | None = None) -> YunApp:
    settings = settings or Settings()
    app = YunApp(title="Yun", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services = services or build_services(settings)
    app.lane = InferenceLane(
        services,
        {"/v1/chat/completions": chat_completions, "/v1/completions": completions, "/v1/embeddings": embeddings},
        settings.server.max_body_bytes,
    )
    install_error_handlers(app)
    for router in (
        models_router,
        ops_router,
        organization_router,
        admin_router,
    ):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes)
    return app
