"""Server VAD of /v1/realtime: speech start and end in the 24 kHz input audio stream.

Speech probability per 32 ms window comes from Silero VAD, the ONNX model shipped inside the
faster-whisper package (the ``offline`` extra). The streaming use is cheap (about 0.1 ms a
window on one CPU thread): the LSTM state (h, c) and the 64-sample context are carried from
window to window, so each ``feed`` only runs the new audio. Where faster-whisper or onnxruntime
is not installed, an energy detector stands in (RMS in dBFS mapped onto 0..1: -60 dBFS → 0,
-20 dBFS → 1, so the default threshold 0.5 means -40 dBFS); it cannot tell speech from noise,
but keeps server VAD usable on a slim install.

``feed`` is synchronous and CPU-bound: the session calls it through ``asyncio.to_thread``.
Times are milliseconds since the first audio fed (OpenAI's ``audio_start_ms``/``audio_end_ms``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from providers.wav import pcm16_to_float, resample

log = logging.getLogger("talkgate.realtime.vad")

IN_RATE = 24000
VAD_RATE = 16000
WINDOW = 512  # samples at 16 kHz: 32 ms, Silero's window
WINDOW_IN = WINDOW * IN_RATE // VAD_RATE  # 768 samples at 24 kHz
WINDOW_MS = WINDOW * 1000 // VAD_RATE
CONTEXT = 64
#: Below threshold minus this, a window counts as silence (Silero's own hysteresis).
HYSTERESIS = 0.15

Event = tuple[str, int]


@functools.cache
def _silero() -> Any:
    """The shared ONNX session of faster-whisper's Silero model, or None when not installed."""
    try:
        from faster_whisper.vad import get_vad_model

        return get_vad_model().session
    except Exception as exc:  # ImportError, or onnxruntime missing (RuntimeError)
        log.warning("Silero VAD unavailable (%s): using the energy detector", exc)
        return None


class SpeechDetector:
    """Turns 24 kHz PCM16 into ``speech_started``/``speech_stopped`` events with their ms."""

    def __init__(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        *,
        use_silero: bool = True,
    ) -> None:
        self.threshold = threshold
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.model = _silero() if use_silero else None
        self.pending = np.zeros(0, dtype=np.float32)  # 24 kHz samples short of a window
        self.windows = 0  # windows scored so far
        self.speaking = False
        self.silence_start: int | None = None  # ms where the current silence began
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)

    def feed(self, pcm: bytes) -> list[Event]:
        """Events of the audio fed so far; audio short of a 32 ms window waits for the next call."""
        samples = np.concatenate([self.pending, pcm16_to_float(pcm)])
        whole = samples.size // WINDOW_IN * WINDOW_IN
        self.pending = samples[whole:]
        if not whole:
            return []
        audio = resample(samples[:whole], IN_RATE, VAD_RATE)[: whole // WINDOW_IN * WINDOW]
        events: list[Event] = []
        for start in range(0, audio.size, WINDOW):
            window = audio[start : start + WINDOW]
            prob = self._score(window)
            now = self.windows * WINDOW_MS
            self.windows += 1
            self._step(prob, now, events)
        return events

    def _score(self, window: np.ndarray) -> float:
        if self.model is None:
            rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64))))
            dbfs = 20 * np.log10(max(rms, 1e-9))
            return float(np.clip((dbfs + 60) / 40, 0.0, 1.0))
        batch = window[None, :]
        out, self._h, self._c = self.model.run(
            None, {"input": np.concatenate([self._context, batch], 1), "h": self._h, "c": self._c}
        )
        self._context = batch[:, -CONTEXT:]
        return float(np.ravel(out)[0])

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
