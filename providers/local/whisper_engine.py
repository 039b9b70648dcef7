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
#: A word timed longer than this hides skipped speech (see ``_swallowed``).
STRETCHED_WORD_S = 2.0
#: At most this many re-decodes per call: the cost stays bounded on unusual audio.
MAX_REPAIRS = 2


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
        audio = pcm_to_whisper(request.audio.pcm, request.audio.sample_rate)
        segments, info = self._decode(audio, 0.0, language, request.prompt or None, cancelled)
        for _ in range(MAX_REPAIRS):
            cut = _swallowed(segments)
            if cut is None or cancelled.is_set():
                break
            kept, resume = cut
            tail = audio[round(resume * WHISPER_RATE) :]  # in the language the whole was heard in
            rest, _ = self._decode(tail, resume, language or info.language, None, cancelled)
            if not any(seg.text for seg in rest):
                break  # nothing better heard: keep the first reading
            segments = kept + rest
        text = " ".join(s.text for s in segments if s.text)
        return Transcript(
            text=text,
            language=info.language,
            duration_s=round(float(info.duration), 3),
            segments=[
                Segment(
                    i, s.start, s.end, s.text, [WordTiming(w.text.strip(), w.start, w.end) for w in s.words]
                )
                for i, s in enumerate(segments)
            ],
        )

    def _decode(
        self,
        audio: np.ndarray,
        offset: float,
        language: str | None,
        prompt: str | None,
        cancelled: threading.Event,
    ) -> tuple[list[Segment], Any]:
        """Segments of ``audio`` (timed from ``offset`` seconds), decoded until cancelled; words
        keep Whisper's own leading spaces (none in Chinese) until ``transcribe`` returns."""
        config = self.config
        segments_iter, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=config.beam_size,
            vad_filter=True,
            word_timestamps=config.word_timestamps,
            initial_prompt=prompt,
            condition_on_previous_text=False,  # keeps one misheard segment from derailing the rest
        )
        segments: list[Segment] = []
        for seg in segments_iter:  # decoding happens while iterating
            if cancelled.is_set():
                break
            words = [
                WordTiming(w.word, round(float(w.start) + offset, 3), round(float(w.end) + offset, 3))
                for w in seg.words or []
            ]
            start, end = round(float(seg.start) + offset, 3), round(float(seg.end) + offset, 3)
            segments.append(Segment(len(segments), start, end, seg.text.strip(), words))
        return segments, info


def _swallowed(segments: list[Segment]) -> tuple[list[Segment], float] | None:
    """Where Whisper skipped speech: (the segments before that point, the second to decode again
    from), or None. tiny.en sometimes ends a segment early and stretches its last word over the
    speech it did not write ("…use it for" timed 4.6 → 10.9 s, the rest of a consent statement
    lost); no real word lasts ``STRETCHED_WORD_S``. Decoding resumes at the end of the word before
    it (the gap between words is silence), so the stretched word is heard again whole."""
    for i, seg in enumerate(segments):
        for j, word in enumerate(seg.words):
            if word.end - word.start <= STRETCHED_WORD_S:
                continue
            before = seg.words[:j]
            resume = before[-1].end if before else seg.start
            kept = segments[:i]
            if before:
                text = "".join(w.text for w in before).strip()  # Whisper's words carry their spaces
                kept.append(Segment(i, seg.start, before[-1].end, text, before))
            return kept, resume
    return None
