"""Bailian (DashScope) providers: Qwen chat, Paraformer/Fun-ASR/Qwen3-ASR, CosyVoice/Qwen-TTS.

All three share one ``DashScopeClient`` (one aiohttp session: pooled keep-alive HTTP and
the inference WebSocket), opened by the first ``load()`` and closed by the last ``unload()``.
Alibaba Cloud NLS lives here too (``nls.py``, registered by ``register_nls_providers``), and so
does the egress-proxy rule every cloud client follows (``proxy.py``).
"""

from __future__ import annotations

from typing import Any

from providers.cloud.asr import BailianASRProvider
from providers.cloud.chat import BailianChatProvider
from providers.cloud.client import DashScopeClient
from providers.cloud.embedding import BailianEmbeddingProvider, BailianRerankProvider
from providers.cloud.tts import BailianTTSProvider

__all__ = [
    "BailianASRProvider",
    "BailianChatProvider",
    "BailianEmbeddingProvider",
    "BailianRerankProvider",
    "BailianTTSProvider",
    "DashScopeClient",
    "register_cloud_providers",
]


def register_cloud_providers(services: Any) -> None:
    """Register the three providers (chat, asr, tts) and hook their load/unload into start-up/shutdown."""
    client = DashScopeClient(services.settings)
    services.dashscope = client  # also voice enrollment (gateway/voices/provider.py)
    providers = (
        ("chat", BailianChatProvider(services.settings, client)),
        ("asr", BailianASRProvider(services.settings, client)),
        ("tts", BailianTTSProvider(services.settings, client)),
        ("embedding", BailianEmbeddingProvider(services.settings, client)),
        ("rerank", BailianRerankProvider(services.settings, client)),
    )
    for capability, provider in providers:
        services.registry.register(capability, provider)
        services.on_startup.append(provider.load)
        services.on_shutdown.append(provider.unload)
