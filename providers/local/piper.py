"""Local speech synthesis on piper (ONNX VITS voices): the en_US "joe" voice by default.

Voices: a piper model is one voice (or, for multi-speaker models, a few named speakers).
A request's ``voice`` is resolved in this order (documented in the README):

1. a configured TTS model whose key, or one of whose ``voices``, equals the voice;
2. otherwise the request's model; a multi-speaker model's speaker of that name is used,
   any other name gets the model's default speaker (the router already maps cloud voices
   to local ones through ``voices.local``).

The voice runs in the model's worker process (``providers/local/piper_engine.py``), which
splits the text into sentences, so streaming yields one chunk per sentence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from providers.base import (
    AudioData,
    ErrorKind,
    ProviderError,
    SpeechChunk,
    SpeechResult,
    SynthesizeRequest,
)
from providers.local.lifecycle import LocalModels
from providers.local.models import PiperFiles, piper_files

MIN_SPEED, MAX_SPEED = 0.25, 4.0


class PiperTTSProvider(LocalModels):
    name = "local"
    section = "tts"
    kind = "TTS"
    engine_module = "piper"
    engine_package = "piper-tts"
    engine_class = "providers.local.piper_engine:PiperEngine"

    def _locate(self, name: str, config: Any) -> PiperFiles:
        return piper_files(name, config.model, config.config)

    def model_for_voice(self, model: str, voice: str) -> str:
        """Which configured TTS model speaks ``voice`` (see the module docstring)."""
        for name, config in self._configs.items():
            if voice == name or voice in config.voices:
                return name
        return model

    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult:
        name, job = await self._prepare(request)
        pcm = await self.call(name, "synthesize_all", job)
        return SpeechResult(audio=AudioData(pcm, job["sample_rate"]), characters=len(request.text))

    async def synthesize_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]:
        name, job = await self._prepare(request)
        async for pcm in self.stream(name, "synthesize", job):
            yield SpeechChunk(pcm=pcm, sample_rate=job["sample_rate"])

    async def _prepare(self, request: SynthesizeRequest) -> tuple[str, dict[str, Any]]:
        if not request.text.strip():
            raise ProviderError(ErrorKind.BAD_REQUEST, "the input text is empty", code="InvalidText")
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {request.speed}",
                code="InvalidSpeed",
            )
        if request.sample_rate is not None and not 8000 <= request.sample_rate <= 48000:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"sample_rate must be between 8000 and 48000, got {request.sample_rate}",
                code="InvalidSampleRate",
            )
        name = self.model_for_voice(request.model, request.voice)
        voice = await self.model(name)
        speakers = voice["speaker_id_map"] if voice["num_speakers"] > 1 else {}
        job = {
            "text": request.text,
            "speaker_id": speakers.get(request.voice),
            "length_scale": voice["length_scale"] / request.speed,
            "sample_rate": request.sample_rate or voice["sample_rate"],
            # emotion (gateway/conversation/emotion.py): piper has no pitch, only tempo and loudness
            "volume": min(1.0, max(0.1, float(request.extra.get("local_volume", 1.0)))),
        }
        return name, job
