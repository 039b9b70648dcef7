"""Local speech synthesis on piper (ONNX VITS voices): the en_US "joe" voice by default.

Voices: a piper model is one voice (or, for multi-speaker models, a few named speakers).
A request's ``voice`` is resolved in this order (documented in the README):

1. a configured TTS model whose key, or one of whose ``voices``, equals the voice;
2. otherwise the request's model; a multi-speaker model's speaker of that name is used,
   any other name gets the model's default speaker (the router already maps cloud voices
   to local ones through ``voices.local``).

Piper itself splits the text into sentences (espeak-ng clause detection, which knows
``.``, ``!``, ``?`` and their CJK forms), so streaming yields one chunk per sentence.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from providers.wav import float_to_pcm16, resample

MIN_SPEED, MAX_SPEED = 0.25, 4.0
# espeak-ng (piper's phonemizer) keeps global state and is not thread-safe.
_ESPEAK_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Job:
    text: str
    speaker_id: int | None
    length_scale: float
    sample_rate: int  # output rate


class PiperTTSProvider(LocalModels[Any]):
    name = "local"
    section = "tts"
    kind = "TTS"
    engine_module = "piper"
    engine_package = "piper-tts"

    def _locate(self, name: str, config: Any) -> PiperFiles:
        return piper_files(name, config.model, config.config)

    def _open(self, name: str, config: Any, files: PiperFiles) -> Any:
        from piper import PiperVoice

        try:
            return PiperVoice.load(files.model, config_path=files.config, use_cuda=False)
        except Exception as exc:
            raise ProviderError(
                ErrorKind.UNAVAILABLE,
                f"local TTS model '{name}': piper cannot load {files.model}: {exc}",
                code="ModelUnavailable",
            ) from exc

    def model_for_voice(self, model: str, voice: str) -> str:
        """Which configured TTS model speaks ``voice`` (see the module docstring)."""
        for name, config in self._configs.items():
            if voice == name or voice in config.voices:
                return name
        return model

    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult:
        name, voice, job = await self._prepare(request)
        pcm = await self.pool.run(lambda: b"".join(_synthesize(voice, job)), limits=(self.limit(name),))
        return SpeechResult(audio=AudioData(pcm, job.sample_rate), characters=len(request.text))

    async def synthesize_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]:
        name, voice, job = await self._prepare(request)
        blocks = self.pool.iterate(lambda: _synthesize(voice, job), limits=(self.limit(name),))
        async with aclosing(blocks):  # stop the worker as soon as the consumer goes away
            async for pcm in blocks:
                yield SpeechChunk(pcm=pcm, sample_rate=job.sample_rate)

    async def _prepare(self, request: SynthesizeRequest) -> tuple[str, Any, _Job]:
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
        config = voice.config
        speaker_id = (config.speaker_id_map or {}).get(request.voice) if config.num_speakers > 1 else None
        job = _Job(
            text=request.text,
            speaker_id=speaker_id,
            length_scale=float(config.length_scale) / request.speed,
            sample_rate=request.sample_rate or config.sample_rate,
        )
        return name, voice, job


def _synthesize(voice: Any, job: _Job) -> Iterator[bytes]:
    """One s16le PCM block per sentence (blocking; runs on a worker thread)."""
    from piper import SynthesisConfig

    settings = SynthesisConfig(speaker_id=job.speaker_id, length_scale=job.length_scale)
    with _ESPEAK_LOCK:
        sentences = voice.phonemize(job.text)
    native = voice.config.sample_rate
    for phonemes in sentences:
        if not phonemes:
            continue
        audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), settings)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:  # normalise each sentence to full scale, as piper does
            audio = audio / peak
        yield float_to_pcm16(resample(audio, native, job.sample_rate)).tobytes()
