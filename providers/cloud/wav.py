"""WAV for the HTTP audio endpoints (qwen3-asr-flash in, qwen-tts out), in DashScope's error terms.

The conversions themselves are the shared ones in ``providers.wav``; this module only turns a
malformed answer from DashScope into a retryable ``ProviderError``.
"""

from __future__ import annotations

from providers.base import ErrorKind, ProviderError
from providers.wav import pcm_to_wav, read_wav

__all__ = ["pcm_to_wav", "wav_to_pcm"]


def wav_to_pcm(data: bytes) -> tuple[bytes, int]:
    """A WAV file from DashScope → (mono 16-bit PCM, sample rate); anything else is retryable."""
    try:
        return read_wav(data)
    except ValueError as exc:
        raise ProviderError(ErrorKind.RETRYABLE, f"DashScope returned unusable audio: {exc}") from exc
