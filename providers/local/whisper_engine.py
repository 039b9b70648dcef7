"""faster-whisper inside an engine worker: loads one CTranslate2 Whisper model (worker side only).

Audio arrives as 16-bit PCM at any rate; Whisper wants 16 kHz float32, so the conversion
happens here, in the worker. Silero VAD (bundled with faster-whisper) skips silence, which
both speeds up decoding and stops Whisper from hallucinating text over it. Decoding happens
segment by segment while iterating, and a cancelled call stops at the next segment.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from providers.base import Segment, TranscribeRequest, Transcript, WordTiming
from providers.local.models import WHISPER_BASE_PACKAGE, multilingual_base_dir, unavailable
from providers.local.workers.ipc import LoadSpec
from providers.wav import pcm16_to_float, resample

WHISPER_RATE = 16000


def pcm_to_whisper(pcm: bytes, sample_rate: int) -> np.ndarray:
    """s16le PCM at any rate → float32 in [-1, 1] at 16 kHz."""
    return resample(pcm16_to_float(pcm[: len(pcm) - len(pcm) % 2]), sample_rate, WHISPER_RATE)


class WhisperEngine:
    methods = frozenset({"transcribe"})

    def __init__(self, spec: LoadSpec) -> None:
        from faster_whisper import WhisperModel

        config, files = spec.config, spec.files
        if config.path is None and config.package == WHISPER_BASE_PACKAGE:
            files = multilingual_base_dir(spec.name, Path(spec.options["data_dir"]), prepare=True)
        self.config = config
        try:
            self.model = WhisperModel(
                str(files),
                device="cpu",
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                num_workers=max(1, config.concurrency),
                local_files_only=True,
            )
        except Exception as exc:
            raise unavailable(
                f"local ASR model '{spec.name}': faster-whisper cannot load {files}: {exc}"
            ) from exc

    def info(self) -> dict[str, Any]:
        return {"multilingual": bool(self.model.model.is_multilingual)}

    def transcribe(
        self, request: TranscribeRequest, language: str | None, *, cancelled: threading.Event
    ) -> Transcript:
        config = self.config
        audio = pcm_to_whisper(request.audio.pcm, request.audio.sample_rate)
        segments_iter, info = self.model.transcribe(
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
            if cancelled.is_set():
                break
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
