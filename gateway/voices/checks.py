"""The local checks a voice enrolment passes before anything goes to the cloud.

Each check returns a small dict (``ok`` plus its figures) that is stored verbatim in the consent
record, so an auditor sees what was measured and against which threshold, not only a verdict.
Speech presence uses Silero VAD (the ONNX model inside faster-whisper, as the realtime VAD does);
where it is missing the check says "unavailable" and an RMS energy floor stands in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from gateway.voices import speaker
from gateway.voices.statement import code_spoken, match_score
from providers.base import AudioData

log = logging.getLogger("talkgate.voices")

RATE = 16000


def _speech_segments(samples: np.ndarray) -> tuple[list[tuple[float, float]], str]:
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except Exception:  # ImportError, or onnxruntime missing
        rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
        whole = [(0.0, samples.size / RATE)] if rms > 0.01 else []
        return whole, "energy"
    spans = get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=300))
    return [(s["start"] / RATE, s["end"] / RATE) for s in spans], "silero"


async def speech_check(audio: AudioData, min_speech_s: float) -> dict[str, Any]:
    """Seconds of speech and the longest run (the provider wants continuous reading)."""
    samples = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0
    spans, method = await asyncio.to_thread(_speech_segments, samples)
    speech = sum(end - start for start, end in spans)
    longest = max((end - start for start, end in spans), default=0.0)
    return {
        "ok": speech >= min_speech_s,
        "method": method,
        "speech_s": round(speech, 2),
        "longest_run_s": round(longest, 2),
        "min_speech_s": min_speech_s,
    }


def duration_check(audio: AudioData, low: float, high: float) -> dict[str, Any]:
    return {
        "ok": low <= audio.duration_s <= high,
        "seconds": round(audio.duration_s, 2),
        "min_s": low,
        "max_s": high,
    }


def transcript_check(statement: str, code: str, transcript: str, threshold: float) -> dict[str, Any]:
    score = match_score(statement, transcript)
    spoken = code_spoken(code, transcript)
    return {
        "ok": score >= threshold and spoken,
        "score": round(score, 3),
        "threshold": threshold,
        "code_spoken": spoken,
        "transcript": transcript[:1000],
    }


async def speaker_check(sample: AudioData, consent: AudioData, mode: str, threshold: float) -> dict[str, Any]:
    """``ok`` True/False from Resemblyzer; ``status`` "unavailable" (no model) or "error" (worker failed)."""
    if mode != "resemblyzer" or not speaker.available():
        reason = (
            "disabled by voice_cloning.speaker_check"
            if mode != "resemblyzer"
            else "resemblyzer not installed"
        )
        return {"ok": None, "status": "unavailable", "reason": reason}
    try:
        score = await speaker.similarity(sample.pcm, consent.pcm, sample.sample_rate)
    except Exception as exc:  # a dead worker (BrokenProcessPool) or a model error
        log.warning("speaker check failed: %r", exc)
        speaker.shutdown()
        return {"ok": None, "status": "error", "reason": type(exc).__name__}
    return {
        "ok": score >= threshold,
        "status": "checked",
        "model": "resemblyzer-0.1.4 d-vector",
        "similarity": round(score, 3),
        "threshold": threshold,
    }
