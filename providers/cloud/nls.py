"""Alibaba Cloud NLS (Intelligent Speech Interaction) providers: ``nls:`` targets in any chain.

ASR is the realtime SpeechTranscriber; NLS picks the model (16 kHz, or an 8 kHz telephony model)
by the project's AppKey, not per request, so each target model names a project:
``nls:transcriber-16k`` (``nls.appkey``) and ``nls:transcriber-8k`` (``nls.appkey_8k``); audio is
resampled to the project's rate. TTS is SpeechSynthesizer (``nls:synthesizer``); NLS cuts text
beyond 300 characters, so longer text is spoken as several tasks, one after another. Tokens come
from ``NlsTokenSource`` (cached, refreshed in the background). No retries here: the router owns them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from providers.base import (
    AudioData,
    ErrorKind,
    Health,
    ProviderError,
    Segment,
    SpeechChunk,
    SpeechResult,
    SynthesizeRequest,
    TranscribeRequest,
    Transcript,
    WordTiming,
)
from providers.cloud.asr import join_sentences
from providers.cloud.lifecycle import SharedClientLifecycle
from providers.cloud.nls_client import NlsClient, NlsTask
from providers.cloud.nls_token import NlsTokenSource
from providers.cloud.proxy import EgressProxy
from providers.cloud.tts import split_text
from providers.wav import resample

#: target model -> (settings field holding its AppKey, sample rate of that project's model)
ASR_MODELS: dict[str, tuple[str, int]] = {
    "transcriber-16k": ("appkey", 16000),
    "transcriber-8k": ("appkey_8k", 8000),
}
TTS_MODELS = ("synthesizer",)
#: Audio per binary frame: 100 ms, as the NLS docs recommend.
FRAME_SECONDS = 0.1
MAX_TTS_TASK_CHARS = 300
#: Voices a request may name directly; any other name goes through ``nls.voices`` or the default.
NLS_VOICES = frozenset(
    [
        "xiaoyun",
        "xiaogang",
        "ruoxi",
        "siqi",
        "sijia",
        "sicheng",
        "aiqi",
        "aijia",
        "aicheng",
        "aida",
        "ninger",
        "ruilin",
        "siyue",
        "aiya",
        "aixia",
        "aimei",
        "aiyu",
        "aiyue",
        "aijing",
        "xiaomei",
        "aina",
        "yina",
        "sijing",
        "sitong",
        "xiaobei",
        "aitong",
        "aiwei",
        "aibao",
        "harry",
        "abby",
        "andy",
        "eric",
        "emily",
        "luna",
        "luca",
        "wendy",
        "william",
        "olivia",
        "shanshan",
        "zhiqi",
        "zhichu",
        "zhiyan",
        "zhimi",
        "zhixiang",
    ]
)


def _secret(value: Any) -> str:
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if callable(reveal) else value or "")


def speech_rate(speed: float) -> int:
    """OpenAI's speed (0.25-4.0) as NLS ``speech_rate`` (-500..500 for 0.5x..2x; Alibaba's formula)."""
    speed = min(max(speed, 0.5), 2.0)
    if speed >= 1.0:
        return round((1.0 - 1.0 / speed) / 0.002)
    return round((1.0 - 1.0 / speed) / 0.001)


class NlsLifecycle(SharedClientLifecycle):
    """Load/unload/health shared by the two providers (they share one ``NlsClient``)."""

    name = "nls"

    def __init__(self, settings: Any, client: NlsClient | None = None) -> None:
        self.settings = settings
        self.config = settings.nls
        super().__init__(client or build_client(settings))

    async def health(self) -> Health:
        """Configuration and lifecycle only: never a network call."""
        if not self.config.enabled:
            return Health(ok=False, detail="NLS AccessKey or AppKey not configured")
        state = "loaded" if self._loaded else "not loaded"
        return Health(ok=self._loaded, detail=f"configured for {self.client.gateway_url}; {state}")


class NlsASRProvider(NlsLifecycle):
    def models(self) -> list[str]:
        return list(ASR_MODELS)

    async def transcribe(self, request: TranscribeRequest) -> Transcript:
        if request.model not in ASR_MODELS:
            raise ProviderError(ErrorKind.BAD_REQUEST, f"nls does not serve ASR model {request.model!r}")
        if not request.audio.pcm:
            raise ProviderError(ErrorKind.BAD_REQUEST, "the audio is empty")
        field, rate = ASR_MODELS[request.model]
        appkey = _secret(getattr(self.config, field, None) or self.config.appkey)
        pcm = await asyncio.to_thread(_to_rate, request.audio, rate)
        payload: dict[str, Any] = {
            "format": "pcm",
            "sample_rate": rate,
            "enable_intermediate_result": False,
            "enable_punctuation_prediction": True,
            "enable_inverse_text_normalization": True,
            "enable_words": True,
        }
        for key in ("vocabulary_id", "customization_id", "max_sentence_silence", "disfluency"):
            if key in request.extra:
                payload[key] = request.extra[key]
        sentences: list[dict[str, Any]] = []
        async with self.client.task("SpeechTranscriber", appkey) as task:
            await task.send("StartTranscription", payload)
            await task.wait_for("TranscriptionStarted")
            sender = asyncio.create_task(_send_audio(task, pcm, rate))
            try:
                while True:
                    event, _ = await task.receive()
                    name = event["header"].get("name") if event else None
                    if name == "SentenceEnd":
                        sentences.append(event.get("payload") or {})  # type: ignore[union-attr]
                    elif name == "TranscriptionCompleted":
                        break
                await sender
            finally:
                if not sender.done():
                    sender.cancel()
                    await asyncio.wait([sender])
                if not sender.cancelled():
                    sender.exception()
        segments = [_segment(i, s) for i, s in enumerate(sentences)]
        return Transcript(
            text=join_sentences([s.text for s in segments]),
            language=request.language,
            duration_s=request.audio.duration_s,
            segments=segments,
        )


class NlsTTSProvider(NlsLifecycle):
    def models(self) -> list[str]:
        return list(TTS_MODELS)

    def _payload(self, request: SynthesizeRequest, text: str, rate: int) -> dict[str, Any]:
        voices = self.config.voices
        voice = voices.get(request.voice) or (request.voice if request.voice in NLS_VOICES else None)
        return {
            "text": text,
            "voice": voice or voices.get("*") or self.config.voice,
            "format": "pcm",
            "sample_rate": rate,
            "volume": 50,
            "speech_rate": speech_rate(request.speed),
            "pitch_rate": 0,
        }

    def _rate(self, request: SynthesizeRequest) -> int:
        if request.sample_rate in (8000, 16000, 24000):
            return int(request.sample_rate)
        return int(self.config.tts_sample_rate)

    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult:
        rate = self._rate(request)
        pcm = bytearray()
        async for chunk in self.synthesize_stream(request):
            pcm += chunk.pcm
        return SpeechResult(audio=AudioData(bytes(pcm), rate), characters=len(request.text))

    async def synthesize_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]:
        if request.model not in TTS_MODELS:
            raise ProviderError(ErrorKind.BAD_REQUEST, f"nls does not serve TTS model {request.model!r}")
        if not request.text.strip():
            raise ProviderError(ErrorKind.BAD_REQUEST, "the text to synthesize is empty")
        rate = self._rate(request)
        appkey = _secret(self.config.appkey_tts or self.config.appkey)
        for piece in split_text(request.text, MAX_TTS_TASK_CHARS):
            if not piece.strip():
                continue
            async with self.client.task("SpeechSynthesizer", appkey) as task:
                await task.send("StartSynthesis", self._payload(request, piece, rate))
                while True:
                    event, audio = await task.receive()
                    if audio is not None:
                        if audio:
                            yield SpeechChunk(pcm=audio, sample_rate=rate)
                    elif event is not None and event["header"].get("name") == "SynthesisCompleted":
                        break


def _to_rate(audio: AudioData, rate: int) -> bytes:
    if audio.sample_rate == rate:
        return audio.pcm
    samples = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0
    out = resample(samples, audio.sample_rate, rate)
    return (np.clip(out, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


async def _send_audio(task: NlsTask, pcm: bytes, rate: int) -> None:
    step = max(2, int(rate * FRAME_SECONDS) * 2)
    view = memoryview(pcm)
    for offset in range(0, len(pcm), step):
        await task.send_audio(bytes(view[offset : offset + step]))
    await task.send("StopTranscription")


def _segment(index: int, sentence: dict[str, Any]) -> Segment:
    words = [
        WordTiming(
            text=str(w.get("text", "")),
            start=(w.get("startTime") or w.get("begin_time") or 0) / 1000.0,
            end=(w.get("endTime") or w.get("end_time") or 0) / 1000.0,
        )
        for w in sentence.get("words") or []
        if isinstance(w, dict)
    ]
    return Segment(
        id=index,
        start=(sentence.get("begin_time") or 0) / 1000.0,
        end=(sentence.get("time") or 0) / 1000.0,
        text=str(sentence.get("result") or "").strip(),
        words=words,
    )


def build_client(settings: Any) -> NlsClient:
    config = settings.nls
    proxy = EgressProxy.from_settings(settings)
    tokens = NlsTokenSource(
        access_key_id=config.access_key_id,
        access_key_secret=config.access_key_secret,
        region=config.region,
        endpoint=config.token_endpoint,
        version=config.token_version,
        proxy=proxy,
        timeout_s=float(settings.upstream_timeout_s),
        refresh_margin_s=config.token_refresh_margin_s,
        attempts=config.token_attempts,
    )
    return NlsClient(config.gateway_url, tokens, proxy, float(settings.upstream_timeout_s))


def register_nls_providers(services: Any) -> None:
    """Register ``nls`` for asr and tts (one shared client) and hook load/unload into start-up/shutdown."""
    client = build_client(services.settings)
    for capability, provider in (
        ("asr", NlsASRProvider(services.settings, client)),
        ("tts", NlsTTSProvider(services.settings, client)),
    ):
        services.registry.register(capability, provider)
        services.on_startup.append(provider.load)
        services.on_shutdown.append(provider.unload)
