"""Server VAD of /v1/realtime: speech start and end in the 24 kHz input audio stream.

Speech probability per 32 ms window comes from Silero VAD, the ONNX model shipped inside the
faster-whisper package (the ``offline`` extra). The gateway scores windows in a worker process
(providers/local/vad_engine.py, one ``scorer`` shared by every session): onnxruntime is native
code and must not share the gateway's address space. The streaming use is cheap (about 0.1 ms
a window): the LSTM state (h, c) and the 64-sample context travel with each call, so each
``feed`` only scores the new audio. Without a scorer (unit tests), Silero runs here. Where the
model cannot run (no faster-whisper, or the worker failed), an energy detector stands in (RMS
in dBFS mapped onto 0..1: -60 dBFS → 0, -20 dBFS → 1, so the default threshold 0.5 means
-40 dBFS); it cannot tell speech from noise, but keeps the session's turns going.

``feed`` is synchronous and CPU-bound: the session calls it through ``asyncio.to_thread``.
Times are milliseconds since the first audio fed (OpenAI's ``audio_start_ms``/``audio_end_ms``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from providers.local.vad_engine import initial_state, score_windows
from providers.wav import pcm16_to_float, resample

log = logging.getLogger("talkgate.realtime.vad")

IN_RATE = 24000
VAD_RATE = 16000
WINDOW = 512  # samples at 16 kHz: 32 ms, Silero's window
WINDOW_IN = WINDOW * IN_RATE // VAD_RATE  # 768 samples at 24 kHz
WINDOW_MS = WINDOW * 1000 // VAD_RATE
#: Below threshold minus this, a window counts as silence (Silero's own hysteresis).
HYSTERESIS = 0.15

Event = tuple[str, int]
#: ``scorer(windows, state) -> (probabilities, state)``: Silero in a worker process.
Scorer = Callable[[np.ndarray, tuple[Any, ...]], tuple[np.ndarray, tuple[Any, ...]]]


@functools.cache
def _silero() -> Any:
    """The shared ONNX session of faster-whisper's Silero model, or None when not installed."""
    try:
        from faster_whisper.vad import get_vad_model

        return get_vad_model().session
    except Exception as exc:  # ImportError, or onnxruntime missing (RuntimeError)
        log.warning("Silero VAD unavailable (%s): using the energy detector", exc)
        return None


def _energy(windows: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))
    dbfs = 20 * np.log10(np.maximum(rms, 1e-9))
    return np.clip((dbfs + 60) / 40, 0.0, 1.0)


class SpeechDetector:
    """Turns 24 kHz PCM16 into ``speech_started``/``speech_stopped`` events with their ms."""

    def __init__(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        *,
        use_silero: bool = True,
        scorer: Scorer | None = None,
    ) -> None:
        self.threshold = threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.scorer = scorer if use_silero else None
        self.model = _silero() if use_silero and scorer is None else None
        self.pending = np.zeros(0, dtype=np.float32)  # 24 kHz samples short of a window
        self.windows = 0  # windows scored so far
        self.speaking = False
        self.silence_start: int | None = None  # ms where the current silence began
        self._state = initial_state()

    def feed(self, pcm: bytes) -> list[Event]:
        """Events of the audio fed so far; audio short of a 32 ms window waits for the next call."""
        samples = np.concatenate([self.pending, pcm16_to_float(pcm)])
        whole = samples.size // WINDOW_IN * WINDOW_IN
        self.pending = samples[whole:]
        if not whole:
            return []
        audio = resample(samples[:whole], IN_RATE, VAD_RATE)[: whole // WINDOW_IN * WINDOW]
        events: list[Event] = []
        for prob in self._score(audio.reshape(-1, WINDOW)):
            now = self.windows * WINDOW_MS
            self.windows += 1
            self._step(float(prob), now, events)
        return events

    def _score(self, windows: np.ndarray) -> np.ndarray:
        if self.scorer is not None:
            try:
                probs, self._state = self.scorer(windows, self._state)
                return probs
            except Exception as exc:  # the worker failed (and restarts): these windows by energy
                log.warning("VAD worker call failed (%s): energy detector for %d windows", exc, len(windows))
                return _energy(windows)
        if self.model is None:
            return _energy(windows)
        probs, self._state = score_windows(self.model, windows, self._state)
        return probs

    def _step(self, prob: float, now: int, events: list[Event]) -> None:
        if not self.speaking:
            if prob >= self.threshold:
                self.speaking, self.silence_start = True, None
                events.append(("speech_started", max(0, now - self.prefix_padding_ms)))
            return
        if prob >= max(self.threshold - HYSTERESIS, 0.01):
            self.silence_start = None
            return
        if self.silence_start is None:
            self.silence_start = now
        if now + WINDOW_MS - self.silence_start >= self.silence_duration_ms:
            self.speaking = False
            events.append(("speech_stopped", self.silence_start))
            self.silence_start = None

    def reset_speech(self) -> None:
        """Forgets a speech in progress (the client cleared the buffer)."""
        self.speaking, self.silence_start = False, None

    @property
    def position_ms(self) -> int:
        return self.windows * WINDOW_MS
