"""Bailian speech synthesis: CosyVoice over the duplex WebSocket, Qwen-TTS over HTTP (plain and SSE)."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from providers.base import (
    AudioData,
    ErrorKind,
    ProviderError,
    SpeechChunk,
    SpeechResult,
    SynthesizeRequest,
    WordTiming,
)
from providers.cloud.client import DashScopeClient
from providers.cloud.lifecycle import CloudLifecycle
from providers.cloud.wav import wav_to_pcm
from providers.cloud.ws_task import duplex_task

MULTIMODAL_PATH = "services/aigc/multimodal-generation/generation"

TTS_MODELS: tuple[str, ...] = ("cosyvoice-v2", "cosyvoice-v1", "qwen-tts", "qwen3-tts-flash")

#: CosyVoice's default output rate, and the rates it can produce.
COSYVOICE_DEFAULT_RATE = 22050
COSYVOICE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
#: CosyVoice limits: characters per continue-task message and per task.
COSYVOICE_MAX_MESSAGE_CHARS = 20_000
COSYVOICE_MAX_TASK_CHARS = 200_000
#: Qwen-TTS returns 24 kHz mono 16-bit PCM (Qwen-TTS API docs); the stream carries no rate field.
QWEN_TTS_SAMPLE_RATE = 24_000
QWEN_TTS_DEFAULT_VOICE = "Cherry"
#: CosyVoice-style voice names (longxiaochun_v2, loongstella ...) mean nothing to Qwen-TTS.
_COSYVOICE_VOICE = re.compile(r"^(long|loong)|_v\d+$")
#: Qwen-TTS's preset voices (reference voice-emotion.md §3): CosyVoice refuses them with a 400,
#: which would stop a qwen-tts → cosyvoice → piper chain at CosyVoice, so it gets its default.
QWEN_TTS_VOICES = frozenset({"Cherry", "Serena", "Ethan", "Chelsie", "Dylan", "Jada", "Sunny"})
#: ISO 639-1 codes → Qwen-TTS ``language_type`` names.
LANGUAGE_TYPES = {
    "zh": "Chinese",
    "en": "English",
    "ja": "Japanese",
    "ko": "Korean",
    "de": "German",
    "fr": "French",
    "ru": "Russian",
    "it": "Italian",
    "es": "Spanish",
    "pt": "Portuguese",
}
_BREAKS = "。！？；.!?;\n，,、 "


def split_text(text: str, limit: int = COSYVOICE_MAX_MESSAGE_CHARS) -> list[str]:
    """Pieces of at most ``limit`` characters, cut after punctuation or spaces where possible."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind(ch) for ch in _BREAKS) + 1
        if cut <= limit // 2:  # no useful break: cut hard
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


class _WordTimeline:
    """CosyVoice repeats a sentence's words as they grow; keep the latest list per sentence."""

    def __init__(self) -> None:
        self._words: dict[int, list[dict[str, Any]]] = {}
        self._emitted: dict[int, int] = {}

    def update(self, output: dict[str, Any]) -> None:
        sentence = output.get("sentence")
        if not isinstance(sentence, dict):
            return
        words = sentence.get("words") or []
        index = int(sentence.get("index") or 0)
        if len(words) >= len(self._words.get(index, ())):
            self._words[index] = words

    @staticmethod
    def _timing(word: dict[str, Any]) -> WordTiming:
        return WordTiming(
            text=str(word.get("text", "")),
            start=(word.get("begin_time") or 0) / 1000.0,
            end=(word.get("end_time") or 0) / 1000.0,
        )

    def take_new(self) -> list[WordTiming]:
        """Timings not handed out yet, in sentence order."""
        fresh: list[WordTiming] = []
        for index in sorted(self._words):
            words = self._words[index]
            done = self._emitted.get(index, 0)
            if len(words) > done:
                fresh.extend(self._timing(w) for w in words[done:])
                self._emitted[index] = len(words)
        return fresh

    def all(self) -> list[WordTiming]:
        return [self._timing(w) for index in sorted(self._words) for w in self._words[index]]


def is_cosyvoice(model: str) -> bool:
    return model.startswith("cosyvoice")


def is_qwen_tts(model: str) -> bool:
    return model.startswith("qwen") and "tts" in model


class BailianTTSProvider(CloudLifecycle):
    """``SynthesizeProvider`` for Bailian TTS models. No retries here: the router owns them."""

    def __init__(self, settings: Any, client: DashScopeClient | None = None) -> None:
        super().__init__(settings, client)
        #: Characters per CosyVoice continue-task message (longer texts go in several).
        self.max_message_chars = COSYVOICE_MAX_MESSAGE_CHARS

    def models(self) -> list[str]:
        return list(TTS_MODELS)

    def _check(self, request: SynthesizeRequest) -> None:
        if not request.text.strip():
            raise ProviderError(ErrorKind.BAD_REQUEST, "the text to synthesize is empty")
        if not (is_cosyvoice(request.model) or is_qwen_tts(request.model)):
            raise ProviderError(ErrorKind.BAD_REQUEST, f"bailian does not serve TTS model {request.model!r}")
        if len(request.text) > COSYVOICE_MAX_TASK_CHARS:
            raise ProviderError(
                ErrorKind.BAD_REQUEST, f"text is longer than {COSYVOICE_MAX_TASK_CHARS} characters"
            )

    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult:
        self._check(request)
        if is_qwen_tts(request.model):
            return await self._qwen_plain(request)
        pcm = bytearray()
        rate = _cosyvoice_rate(request)
        timeline = _WordTimeline()
        characters = 0
        messages = self._cosyvoice_messages(request, rate)
        async with contextlib.aclosing(messages):
            async for payload, frame in messages:
                if frame is not None:
                    pcm += frame
                else:
                    timeline.update(payload.get("output") or {})
                    characters = _characters(payload) or characters
        return SpeechResult(audio=AudioData(bytes(pcm), rate), words=timeline.all(), characters=characters)

    async def synthesize_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]:
        """Yields PCM as the upstream produces it, with word timings as they become known."""
        self._check(request)
        if is_qwen_tts(request.model):
            async for chunk in self._qwen_stream(request):
                yield chunk
            return
        rate = _cosyvoice_rate(request)
        timeline = _WordTimeline()
        carry = b""  # an odd trailing byte waits for the next frame (whole samples only)
        messages = self._cosyvoice_messages(request, rate)
        async with contextlib.aclosing(messages):
            async for payload, frame in messages:
                if frame is None:
                    timeline.update(payload.get("output") or {})
                    continue
                data = carry + frame
                cut = len(data) - (len(data) % 2)
                carry = data[cut:]
                if cut:
                    yield SpeechChunk(pcm=data[:cut], sample_rate=rate, words=timeline.take_new())
        leftover = timeline.take_new()
        if leftover:
            yield SpeechChunk(pcm=b"", sample_rate=rate, words=leftover)

    # ------------------------------------------------------------------ CosyVoice (WebSocket)

    async def _cosyvoice_messages(
        self, request: SynthesizeRequest, rate: int
    ) -> AsyncIterator[tuple[dict[str, Any], bytes | None]]:
        """Runs one task; yields ``(payload, None)`` per JSON event and ``({}, frame)`` per audio frame."""
        voice = request.voice
        if voice in QWEN_TTS_VOICES:  # a fallback from Qwen-TTS: its voice means nothing here
            voice = self.settings.voices.default
        parameters: dict[str, Any] = {
            "text_type": "PlainText",
            "voice": voice,
            "format": "pcm",
            "sample_rate": rate,
            "volume": int(request.extra.get("volume", 50)),
            "rate": request.speed,
            "pitch": float(request.extra.get("pitch", 1.0)),
            "word_timestamp_enabled": True,
        }
        if request.language:
            parameters["language_hints"] = [request.language]
        if "instruction" in request.extra:
            parameters["instruction"] = request.extra["instruction"]
        head = {"model": request.model, "task_group": "audio", "task": "tts", "function": "SpeechSynthesizer"}
        async with duplex_task(self.client, {**head, "parameters": parameters, "input": {}}) as task:
            # The whole text is known up front: send it all, then finish, then read.
            for piece in split_text(request.text, self.max_message_chars):
                await task.send_action("continue-task", {**head, "input": {"text": piece}})
            await task.finish()
            while (item := await task.receive()) is not None:
                event, frame = item
                if frame is not None:
                    yield {}, frame
                elif event is not None:
                    yield event.get("payload") or {}, None
            yield task.finished_payload, None  # CosyVoice puts the complete word list here

    # ------------------------------------------------------------------ Qwen-TTS (HTTP)

    def _qwen_body(self, request: SynthesizeRequest) -> dict[str, Any]:
        voice = request.voice or QWEN_TTS_DEFAULT_VOICE
        if _COSYVOICE_VOICE.search(voice):
            voice = QWEN_TTS_DEFAULT_VOICE
        body_input: dict[str, Any] = {"text": request.text, "voice": voice}
        language = LANGUAGE_TYPES.get((request.language or "").split("-")[0].lower())
        if language:
            body_input["language_type"] = language
        return {"model": request.model, "input": body_input, "parameters": {}}

    async def _qwen_plain(self, request: SynthesizeRequest) -> SpeechResult:
        reply = await self.client.post_json(MULTIMODAL_PATH, self._qwen_body(request))
        audio = (reply.get("output") or {}).get("audio") or {}
        if audio.get("data"):
            raw = base64.b64decode(audio["data"])
        elif audio.get("url"):
            raw = await self.client.download(audio["url"])
        else:
            raise ProviderError(ErrorKind.RETRYABLE, "Qwen-TTS reply carries no audio")
        if raw[:4] == b"RIFF":
            pcm, rate = wav_to_pcm(raw)
        else:
            pcm, rate = raw, QWEN_TTS_SAMPLE_RATE
        return SpeechResult(audio=AudioData(pcm, rate), characters=_characters(reply) or len(request.text))

    async def _qwen_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]:
        events = self.client.stream_sse(MULTIMODAL_PATH, self._qwen_body(request))
        carry = b""
        async with contextlib.aclosing(events):
            async for data in events:
                output = data.get("output") or {}
                encoded = (output.get("audio") or {}).get("data")
                if encoded:
                    pcm = carry + base64.b64decode(encoded)
                    cut = len(pcm) - (len(pcm) % 2)
                    carry = pcm[cut:]
                    if cut:
                        yield SpeechChunk(pcm=pcm[:cut], sample_rate=QWEN_TTS_SAMPLE_RATE)
                if output.get("finish_reason") not in (None, "null", ""):
                    return
        raise ProviderError(ErrorKind.RETRYABLE, "Qwen-TTS stream ended without a finish reason")


def _cosyvoice_rate(request: SynthesizeRequest) -> int:
    """The requested rate when CosyVoice can produce it, else its native 22050 Hz (caller resamples)."""
    if request.sample_rate in COSYVOICE_RATES:
        return int(request.sample_rate)
    return COSYVOICE_DEFAULT_RATE


def _characters(payload: dict[str, Any]) -> int:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        return int(usage.get("characters") or 0)
    return 0
