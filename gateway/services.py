"""The process-wide service container, built once at start-up and torn down at shutdown.

Each subsystem adds itself in ``build_services``; route handlers reach it via
``request.app.state.services``. Nothing here touches the network at construction time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from gateway.settings import Settings
from policies.routing import ProviderRegistry, Router

log = logging.getLogger("talkgate.services")


@dataclass
class Services:
    settings: Settings
    registry: ProviderRegistry
    router: Router
    # Subsystems; None until wired in.
    cache: Any = None  # policies.cache
    keystore: Any = None  # gateway.keystore (SaaS)
    limiter: Any = None  # policies.ratelimit
    usage: Any = None  # gateway.usage
    breakers: Any = None  # policies.circuit
    experiments: Any = None  # policies.experiments
    metrics: Any = None  # gateway.metrics
    avatars: Any = None  # lipsync avatar store
    renderer: Any = None  # lipsync renderer
    redis: Any = None  # shared redis.asyncio client, when TALKGATE_REDIS_URL is set
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def start(self) -> None:
        for hook in self.on_startup:
            await hook()

    async def stop(self) -> None:
        for hook in reversed(self.on_shutdown):
            try:
                await hook()
            except Exception:  # keep shutting the rest down
                log.exception("shutdown hook failed")


def build_services(settings: Settings) -> Services:
    registry = ProviderRegistry()
    router = Router(settings, registry)
    services = Services(settings=settings, registry=registry, router=router)
    _wire_providers(services)
    return services


def _wire_providers(services: Services) -> None:
    """Cloud providers only with a key; local providers always (they load lazily)."""
    settings = services.settings
    if settings.cloud_enabled:
        try:
            from providers.cloud import register_cloud_providers
        except ImportError:  # pragma: no cover - during bring-up
            log.warning("cloud providers are not available in this build")
        else:
            register_cloud_providers(services)
    try:
        from providers.local import register_local_providers
    except ImportError:
        log.warning("local providers are not available in this build")
    else:
        register_local_providers(services)


def get_services(request: Request) -> Services:
    return request.app.state.services
