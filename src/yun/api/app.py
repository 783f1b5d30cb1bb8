"""The app factory. Services are built once and kept on `app.state`; nothing is global."""

from __future__ import annotations

from fastapi import FastAPI

from yun.api.admin.router import router as admin_router
from yun.api.errors import install_error_handlers
from yun.api.lifespan import lifespan
from yun.api.limits import BodyLimit
from yun.api.openai.chat.router import router as chat_router
from yun.api.openai.completions.router import router as completions_router
from yun.api.openai.embeddings.router import router as embeddings_router
from yun.api.openai.models.router import router as models_router
from yun.api.ops import router as ops_router
from yun.api.organization.router import router as organization_router
from yun.api.services import Services, build_services
from yun.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Yun", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services or build_services(settings)
    install_error_handlers(app)
    for router in (
        chat_router,
        completions_router,
        embeddings_router,
        models_router,
        ops_router,
        organization_router,
        admin_router,
    ):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes)
    return app
