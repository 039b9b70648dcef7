"""Audio uploads are bounded by duration, per surface, before and while decoding.

Why: compressed silence expands enormously (a 2.4 MB FLAC holds 3.5 hours of 8 kHz audio,
12,600 s of billed ASR and ~400 MB of PCM), and the codec's own ceiling is 4 hours. Each
surface has its own limit, sized to what its upstream accepts (``settings.limits.
audio_max_seconds``: "transcription", "talk", and later the realtime and voice-enrolment
surfaces), checked from the container's declared duration before decoding and counted while
decoding (``gateway.audio.decode_to_pcm``), plus a cap on decoded bytes per uploaded byte.
"""

from __future__ import annotations

from typing import Any

from gateway.audio import decode_to_pcm, run_in_codec_pool
from providers.base import AudioData


async def decode_upload(data: bytes, sample_rate: int, limits: Any, surface: str) -> AudioData:
    """``data`` decoded to mono PCM on the codec pool, within ``surface``'s limits."""
    return await run_in_codec_pool(
        lambda: decode_to_pcm(
            data,
            sample_rate,
            max_seconds=limits.audio_seconds(surface),
            max_expansion=limits.audio_max_expansion,
        )
    )
