"""The app factory. Services are built once and kept on `app.state`; nothing is global.

One front door: every request, inference included, enters this one FastAPI app and passes the same
middleware, router and error handlers (api/inference.py says how the inference routes stay lean).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from yun.api.admin.router import router as admin_router
from yun.api.anthropic.router import router as messages_router
from yun.api.console import STATIC_DIR as CONSOLE_STATIC
from yun.api.console import router as console_router
from yun.api.errors import install_error_handlers
from yun.api.lifespan import lifespan
from yun.api.limits import MULTIPART_OVERHEAD, BodyLimit
from yun.api.openai.chat.router import router as chat_router
from yun.api.openai.completions.router import router as completions_router
from yun.api.openai.embeddings.router import router as embeddings_router
from yun.api.openai.files.router import UPLOAD_ROUTE
from yun.api.openai.files.router import router as files_router
from yun.api.openai.fine_tuning.router import router as fine_tuning_router
from yun.api.openai.models.router import router as models_router
from yun.api.openai.responses_api.router import router as responses_router
from yun.api.openai.responses_api.router import stored as stored_responses_router
from yun.api.ops import router as ops_router
from yun.api.organization.offer import router as offer_router
from yun.api.organization.router import router as organization_router
from yun.api.services import Services, build_services
from yun.settings import Settings

__all__ = ["DOCS_ASSETS", "create_app"]

# Swagger UI's JS and CSS, served by Yun from the fastapi-offline package: /docs works with no internet
# (and loads nothing from a third party's CDN into an admin's browser).
DOCS_ASSETS = "/docs/assets"


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPIOffline(
        title="Yun",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},  # no calls to swagger.io's online validator
        # FastAPI's native OpenTelemetry hooks check for configured providers on every request (~5 µs);
        # Yun's metrics are Prometheus (/metrics) and it configures no OpenTelemetry providers.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services or build_services(settings)
    install_error_handlers(app)
    # The inference routes go on the app's own router, ahead of the docs: FastAPI matches the routes of
    # an included router through an extra layer on every request, and these are nearly all of the
    # traffic (each route tried before the match costs ~1.5 µs). Included, a route is also run by FastAPI's
    # own request handler instead of its `InferenceRoute` one (POST /v1/responses was, at ~30 µs more per
    # request). Anthropic's Messages routes come last.
    # A controller (`--role controller`) serves no inference: only health, metrics and the admin API.
    serving = settings.cluster.role != "controller"
    if serving:
        inference = (chat_router, completions_router, embeddings_router, responses_router, messages_router)
        app.router.routes[0:0] = [route for router in inference for route in router.routes]
    routers = (
        stored_responses_router,
        files_router,
        fine_tuning_router,
        models_router,
        ops_router,
        organization_router,
        offer_router,
        admin_router,
        console_router,
    )
    for router in routers:
        if serving or router in (ops_router, admin_router):
            app.include_router(router)
    if serving:
        # The console's own assets (htmx, Chart.js, its CSS and JS), from the package: no CDN.
        app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC), name="console-static")
    # Every body is held to the 8 MiB inference limit, except an upload: it is streamed to the file store
    # and may be as large as one file (plus the multipart framing around it).
    upload_limit = settings.files.max_file_bytes + MULTIPART_OVERHEAD
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes, streamed={UPLOAD_ROUTE: upload_limit})
    if settings.server.cors_origins:
        # Outermost, so every answer (a 413 or 401 too) carries the headers a browser needs to read it, and
        # preflight OPTIONS requests are answered before routing (which knows only POST there: 405).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["*"],
            max_age=600,
        )
    return app
