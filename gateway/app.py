"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.context import RequestContextMiddleware
from gateway.errors import install_error_handlers
from gateway.fastpath import GatewayApp
from gateway.fastpath import collect as collect_fast_paths
from gateway.gc_tuning import settle_after_startup
from gateway.inputs.hosts import HostCheck
from gateway.jsonresponse import OrjsonResponse
from gateway.services import Services, build_services
from gateway.settings import Settings


def create_app(settings: Settings | None = None, services: Services | None = None) -> GatewayApp:
    settings = settings or Settings()
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        settle_after_startup(settings.gc_freeze, settings.gc_gen0_threshold)
        try:
            yield
        finally:
            await services.stop()

    app = GatewayApp(
        title="talkgate",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # The API map is off unless asked for (TALKGATE_DOCS_ENABLED): it lists every admin route.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.services = services
    app.state.settings = settings
    app.body_idle_timeout_s = settings.limits.body_idle_timeout_s
    if "*" not in settings.allowed_hosts:
        app.host_check = HostCheck(settings.allowed_hosts)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.serve_lean(RequestContextMiddleware)

    from gateway.routes import ROUTERS

    for router in ROUTERS:
        app.include_router(router)
    app.fast_paths.update(collect_fast_paths([r for router in ROUTERS for r in router.routes]))  # no prefixes
    return app
