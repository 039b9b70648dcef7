"""The process-wide service container, built once at start-up and torn down at shutdown.

Each subsystem adds itself in ``build_services``; route handlers reach it via
``request.app.state.services``. Nothing here touches the network at construction time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from gateway.knowledge.grounding import KnowledgeRetriever, Retriever
from gateway.knowledge.service import KnowledgeService
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
    swaps: Any = None  # gateway.hotswap.SwapManager
    avatars: Any = None  # lipsync avatar store
    renderer: Any = None  # lipsync renderer
    calls: Any = None  # gateway.webrtc.peer.CallRegistry: live WebRTC calls
    redis: Any = None  # shared redis.asyncio client, when TALKGATE_REDIS_URL is set
    quota: Any = None  # policies.quota (SaaS)
    voice_store: Any = None  # gateway.voices.store.VoiceStore (created on first use)
    local_pool: Any = None  # providers.local.pool.ModelPool: local engine worker processes
    realtime_metrics: Any = None  # gateway.realtime.metrics.RealtimeMetrics
    vad_scorer: Any = None  # Silero VAD in a worker (providers/local/vad_engine.py); None: in-process
    knowledge: KnowledgeService | None = None  # files, vector stores, search (gateway/knowledge/)
    retriever: Retriever | None = None  # grounding for chat, talk and realtime turns
    dashscope: Any = None  # providers.cloud.client.DashScopeClient shared by the Bailian providers
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
    _wire_redis(services)
    _wire_breakers(services)
    _wire_providers(services)
    _wire_operations(services)
    _wire_saas(services)
    _wire_knowledge(services)
    _wire_lipsync(services)
    _wire_webrtc(services)
    return services


def _wire_knowledge(services: Services) -> None:
    """Files and vector stores in the keys-and-usage database; started after its migrations."""
    settings = services.settings
    knowledge = services.knowledge = KnowledgeService(
        services.keystore.sessions,
        settings.data_dir,
        services.router,
        services.registry,
        settings.knowledge,
        services.metrics,
    )
    services.retriever = KnowledgeRetriever(
        knowledge, settings.knowledge.answer_min_score, settings.knowledge.answer_min_support
    )
    services.on_startup.append(knowledge.start)
    services.on_shutdown.append(knowledge.stop)


def _wire_webrtc(services: Services) -> None:
    """Live calls (POST /v1/realtime/calls): bounded per process, all hung up at shutdown."""
    from gateway.webrtc.peer import CallRegistry

    cfg = services.settings.webrtc
    services.calls = CallRegistry(cfg.max_calls, cfg.connect_timeout_s)
    services.on_shutdown.append(services.calls.close_all)


def _wire_lipsync(services: Services) -> None:
    """Avatar store and renderer. Torch is imported only when a Wav2Lip checkpoint is configured."""
    from lipsync.avatars import AvatarStore
    from lipsync.render import RenderService

    settings = services.settings
    cfg = settings.lipsync
    services.avatars = AvatarStore(settings.data_dir / "avatars", pads=cfg.pads, min_face_px=cfg.min_face_px)
    services.renderer = RenderService.from_settings(settings)
    services.on_startup.append(services.renderer.start)
    services.on_shutdown.append(services.renderer.stop)


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
    if settings.nls.enabled:
        from providers.cloud.nls import register_nls_providers

        register_nls_providers(services)
    try:
        from providers.local import register_local_providers
    except ImportError:
        log.warning("local providers are not available in this build")
    else:
        register_local_providers(services)


def _wire_redis(services: Services) -> None:
    """One shared client (no connection is made until first use)."""
    if services.settings.redis_url and services.redis is None:
        import redis.asyncio as aioredis

        services.redis = aioredis.Redis.from_url(services.settings.redis_url, health_check_interval=30)

        async def close_redis() -> None:
            await services.redis.aclose()

        services.on_shutdown.insert(0, close_redis)  # shutdown runs hooks in reverse: closed last


def _wire_breakers(services: Services) -> None:
    """Circuit breakers: shared through Redis when configured, else per process."""
    from policies.circuit import BreakerRegistry, BreakerSettings

    config = BreakerSettings.from_config(services.settings.breaker)
    if services.redis is not None:
        from policies.circuit_redis import RedisBreakerStore

        registry = BreakerRegistry(RedisBreakerStore(services.redis, config))
    else:
        registry = BreakerRegistry.in_memory(services.settings.breaker)
    services.router.breakers = registry
    services.breakers = registry


def _wire_saas(services: Services) -> None:
    """API keys, rate limits, quotas, usage records and the response cache.

    Start-up runs the migrations and starts the usage writer; shutdown flushes every buffered
    usage row before the database engine is disposed.
    """
    from gateway.db.queries import sum_usage
    from gateway.keystore import KeyStore
    from gateway.usage import UsageRecorder
    from policies.cache import ResponseCache
    from policies.quota import QuotaTracker
    from policies.ratelimit import FailoverRateLimiter, MemoryRateLimiter, RedisRateLimiter

    settings = services.settings
    saas = settings.saas
    keystore = KeyStore(settings.resolved_database_url, cache_ttl_s=saas.key_cache_ttl_s)
    services.keystore = keystore
    if services.redis is not None:
        services.limiter = FailoverRateLimiter(
            RedisRateLimiter(services.redis, lease_s=saas.concurrency_lease_s)
        )
    else:
        services.limiter = MemoryRateLimiter()

    async def db_sums(tenant: str, since_ms: int, until_ms: int) -> dict[str, float]:
        return await sum_usage(keystore.sessions, tenant, since_ms, until_ms)

    services.quota = QuotaTracker(db_sums, services.redis)
    services.usage = UsageRecorder(
        keystore.sessions,
        flush_interval_s=saas.usage_flush_interval_s,
        batch_rows=saas.usage_batch_rows,
        buffer_rows=saas.usage_buffer_rows,
        quota=services.quota,
    )
    services.cache = ResponseCache(settings.cache, services.redis)

    async def start_saas() -> None:
        if saas.migrate_on_start:
            await keystore.migrate()
        await services.usage.start()

    async def stop_saas() -> None:
        await services.usage.stop()
        await keystore.close()

    services.on_startup.append(start_saas)
    services.on_shutdown.append(stop_saas)


def _wire_operations(services: Services) -> None:
    """Metrics (own registry, router events), A/B experiments and the model swap manager."""
    from gateway.hotswap import SwapManager
    from gateway.metrics import Metrics, inflight_family
    from gateway.metrics_collectors import worker_families
    from gateway.realtime.metrics import RealtimeMetrics
    from policies.experiments import Experiments

    metrics = services.metrics = Metrics()
    services.realtime_metrics = RealtimeMetrics(metrics.registry)
    services.router.listeners.append(metrics.on_router_event)
    # torch's CUDA allocations are the Wav2Lip worker's (llama.cpp etc. use none); it reports them.
    metrics.register_gpu_module(
        "lipsync", lambda: services.renderer.gpu_memory() if services.renderer else {}
    )
    metrics.init_targets(
        spec
        for route in services.settings.routes.values()
        for spec in (*route.chain, *(s for chain in route.chains.values() for s in chain))
    )
    services.experiments = Experiments(services.settings)
    swaps = services.swaps = SwapManager(services)
    metrics.add_collector(lambda: [inflight_family(swaps.inflight())])

    def worker_stats() -> list[Any]:
        pool, renderer = services.local_pool, services.renderer
        return [*(pool.stats() if pool else ()), *(renderer.worker_stats() if renderer else ())]

    metrics.add_collector(lambda: worker_families(worker_stats()))

    async def track_providers() -> None:
        swaps.track_all()
        if services.quota is not None:  # wired after this function: hook it up at start-up
            services.quota.observer = metrics.quota

    services.on_startup.append(track_providers)
    services.on_shutdown.append(swaps.close)
    if services.redis is not None:  # replicas share admin-created experiments through Redis
        from policies.experiments import run_sync

        sync: dict[str, Any] = {}

        async def start_sync() -> None:
            sync["task"] = asyncio.create_task(run_sync(services.experiments, services.redis))

        async def stop_sync() -> None:
            if "task" in sync:
                sync["task"].cancel()

        services.on_startup.append(start_sync)
        services.on_shutdown.append(stop_sync)


def get_services(request: Request) -> Services:
    return request.app.state.services
