"""In-memory WAV wrapping for the HTTP audio endpoints (qwen3-asr-flash in, qwen-tts out)."""

from __future__ import annotations

import io
import wave

import numpy as np

from providers.base import ErrorKind, ProviderError


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Mono 16-bit PCM → a RIFF/WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_to_pcm(data: bytes) -> tuple[bytes, int]:
    """A WAV file → (mono 16-bit PCM, sample rate). Multi-channel audio is averaged to mono."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ProviderError(
            ErrorKind.RETRYABLE, f"DashScope returned audio that is not a WAV file: {exc}"
        ) from exc
    if width == 2 and channels == 1:
        return frames, rate
    if width != 2:
        raise ProviderError(ErrorKind.RETRYABLE, f"DashScope returned {8 * width}-bit WAV; expected 16-bit")
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1)
    return samples.astype("<i2").tobytes(), rate
