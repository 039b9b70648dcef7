"""Scripted in-process providers for route tests that need failures the simulator cannot stage.

Behaviour is chosen by the request content, so one gateway serves every case:
a chat message containing ``[filter]`` is content-filtered, ``[break]`` breaks the stream
after its first chunk, ``[down]`` fails before the first chunk, ``[crash]`` returns a malformed result; TTS text containing
``[break]`` fails after the first PCM piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.services import Services
from gateway.settings import Settings
from policies.routing import ProviderRegistry, Router
from providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ErrorKind,
    Health,
    ProviderError,
    Segment,
    SpeechChunk,
    SpeechResult,
    SynthesizeRequest,
    TranscribeRequest,
    Transcript,
    Usage,
    WordTiming,
)
from tests.servers import serving
from tests.sounds import sine_pcm


class _Base:
    name = "bailian"

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def load(self) -> None:
        pass

    async def unload(self) -> None:
        pass

    async def health(self) -> Health:
        return Health(ok=True)

    def models(self) -> list[str]:
        return []


class FakeChat(_Base):
    @staticmethod
    def _last_user(request: ChatRequest) -> str:
        return next(m["content"] for m in reversed(request.messages) if m["role"] == "user")

    def _check(self, text: str) -> None:
        if "[filter]" in text:
            raise ProviderError(ErrorKind.CONTENT_FILTERED, "Input data may contain inappropriate content.")
        if "[down]" in text:
            raise ProviderError(ErrorKind.BAD_REQUEST, "upstream refused the request")

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.calls.append(request)
        text = self._last_user(request)
        self._check(text)
        if "[crash]" in text:  # a provider bug: a malformed result the route cannot serialise
            return ChatResult(text="x", usage=None)  # type: ignore[arg-type]
        return ChatResult(text=f"echo: {text}", usage=Usage(prompt_tokens=7, completion_tokens=3))

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.calls.append(request)
        text = self._last_user(request)
        self._check(text)
        yield ChatChunk(delta="echo:")
        if "[break]" in text:
            raise ProviderError(ErrorKind.RETRYABLE, "connection reset by upstream")
        for word in text.split():
            yield ChatChunk(delta=" " + word)
        yield ChatChunk(finish_reason="stop", usage=Usage(prompt_tokens=7, completion_tokens=4))


class FakeASR(_Base):
    async def transcribe(self, request: TranscribeRequest) -> Transcript:
        self.calls.append(request)
        d = request.audio.duration_s
        words = [WordTiming("hello", 0.0, d / 2), WordTiming("world", d / 2, d)]
        return Transcript(
            text="hello world",
            language=request.language or "en",
            duration_s=d,
            segments=[Segment(id=0, start=0.0, end=d, text="hello world", words=words)],
        )


class FakeTTS(_Base):
    rate = 22050

    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult:
        raise NotImplementedError

    async def synthesize_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]:
        self.calls.append(request)
        piece = sine_pcm(0.25, self.rate)
        yield SpeechChunk(pcm=piece, sample_rate=self.rate)
        if "[break]" in request.text:
            raise ProviderError(ErrorKind.RETRYABLE, "websocket closed")
        for _ in range(3):
            yield SpeechChunk(pcm=piece, sample_rate=self.rate)


def fake_services(data_dir: Path, **overrides: Any) -> Services:
    """Services with the scripted providers registered as "bailian" (no local fallback)."""
    routes = {
        "chat": {"chain": ["bailian:qwen-plus"], "aliases": {"default": "qwen-plus"}},
        "asr": {
            "chain": ["bailian:paraformer-realtime-v2"],
            "aliases": {"whisper-1": "paraformer-realtime-v2"},
        },
        "tts": {"chain": ["bailian:cosyvoice-v2"], "aliases": {"tts-1": "cosyvoice-v2"}},
    }
    settings = Settings(data_dir=data_dir, log_json=False, routes=routes, **overrides)
    registry = ProviderRegistry()
    services = Services(settings=settings, registry=registry, router=Router(settings, registry))
    registry.register("chat", FakeChat())
    registry.register("asr", FakeASR())
    registry.register("tts", FakeTTS())
    return services


class FakeGateway:
    """A real uvicorn server running the gateway app over the scripted providers."""

    def __init__(self, services: Services, server: Any) -> None:
        self.services = services
        self.server = server
        self.url = server.url

    def provider(self, capability: str) -> Any:
        return self.services.registry.get(capability, "bailian")


@pytest.fixture(scope="module")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGateway]:
    from gateway.app import create_app

    services = fake_services(tmp_path_factory.mktemp("gw"), max_upload_bytes=256 * 1024, max_tts_chars=200)
    with serving(create_app(services.settings, services)) as server:
        yield FakeGateway(services, server)


@pytest.fixture
def client(fake_gateway: FakeGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_gateway.url, timeout=30) as c:
        yield c
