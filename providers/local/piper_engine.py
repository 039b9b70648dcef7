"""piper inside an engine worker: loads one ONNX VITS voice and speaks (worker side only).

Piper splits the text into sentences itself (espeak-ng clause detection, which knows ``.``,
``!``, ``?`` and their CJK forms), so a stream yields one PCM block per sentence, and a
cancelled call stops before its next sentence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from providers.local.models import unavailable
from providers.local.workers.ipc import LoadSpec
from providers.wav import float_to_pcm16, resample

# espeak-ng (piper's phonemizer) keeps global state and is not thread-safe.
_ESPEAK_LOCK = threading.Lock()


class PiperEngine:
    methods = frozenset({"synthesize", "synthesize_all"})

    def __init__(self, spec: LoadSpec) -> None:
        from piper import PiperVoice

        try:
            self.voice = PiperVoice.load(spec.files.model, config_path=spec.files.config, use_cuda=False)
        except Exception as exc:
            raise unavailable(
                f"local TTS model '{spec.name}': piper cannot load {spec.files.model}: {exc}"
            ) from exc

    def info(self) -> dict[str, Any]:
        config = self.voice.config
        return {
            "sample_rate": int(config.sample_rate),
            "num_speakers": int(config.num_speakers),
            "speaker_id_map": dict(config.speaker_id_map or {}),
            "length_scale": float(config.length_scale),
        }

    def synthesize_all(self, job: dict[str, Any], *, cancelled: threading.Event) -> bytes:
        return b"".join(self.synthesize(job, cancelled=cancelled))

    def synthesize(self, job: dict[str, Any], *, cancelled: threading.Event) -> Iterator[bytes]:
        """One s16le PCM block per sentence at ``job["sample_rate"]``."""
        from piper import SynthesisConfig

        voice = self.voice
        settings = SynthesisConfig(speaker_id=job["speaker_id"], length_scale=job["length_scale"])
        with _ESPEAK_LOCK:
            sentences = voice.phonemize(job["text"])
        native = voice.config.sample_rate
        for phonemes in sentences:
            if cancelled.is_set():
                return
            if not phonemes:
                continue
            audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), settings)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak > 1e-8:  # normalise each sentence to full scale, as piper does (then the volume)
                audio = audio / peak * job.get("volume", 1.0)
            yield float_to_pcm16(resample(audio, native, job["sample_rate"])).tobytes()
