"""The session's audio formats on the wire ⇄ the 24 kHz PCM16 the session works in.

``audio/pcm`` is 24 kHz 16-bit little-endian mono; ``audio/pcmu`` and ``audio/pcma`` are 8 kHz
G.711 (telephony: a SIP or call-centre bridge sends them as they come off the line). Inside
the session everything is 24 kHz PCM16, so VAD, the buffer limits and truncation are
computed once; conversion happens at the edges, off the event loop for large chunks.
"""

from __future__ import annotations

import av
import numpy as np

from gateway.realtime.events import FORMATS, PCM_RATE
from providers.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from providers.wav import float_to_pcm16, pcm16_to_float, resample

_CODECS = {"audio/pcmu": (ulaw_decode, ulaw_encode), "audio/pcma": (alaw_decode, alaw_encode)}


def to_rate(pcm: bytes, src: int, dst: int) -> bytes:
    """16-bit mono PCM at ``src`` Hz → ``dst`` Hz (identity when equal)."""
    if src == dst or not pcm:
        return pcm
    return float_to_pcm16(resample(pcm16_to_float(pcm), src, dst)).tobytes()


def wire_to_pcm(data: bytes, kind: str) -> bytes:
    """Bytes of one append in ``kind`` → 24 kHz PCM16."""
    if kind == "audio/pcm":
        return data
    decode, _ = _CODECS[kind]
    return to_rate(decode(data), FORMATS[kind], PCM_RATE)


def pcm_to_wire(pcm: bytes, kind: str) -> bytes:
    """24 kHz PCM16 → bytes of ``kind`` for an output audio delta."""
    if kind == "audio/pcm":
        return pcm
    _, encode = _CODECS[kind]
    return encode(to_rate(pcm, PCM_RATE, FORMATS[kind]))


class Resampler:
    """Stateful PCM16 mono conversion between rates (libswresample through PyAV): a stream cut in
    20 ms pieces is resampled as one signal, without a filter edge at every piece."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def frame(self, frame: av.AudioFrame | None) -> bytes:
        """One frame → PCM16 at this rate (None flushes what the filter still holds)."""
        return b"".join(bytes(out.planes[0])[: out.samples * 2] for out in self.resampler.resample(frame))

    def pcm(self, pcm: bytes, rate: int) -> bytes:
        """Mono PCM16 at ``rate`` → this resampler's rate."""
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        return self.frame(frame)
