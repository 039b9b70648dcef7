"""WAV and 16-bit PCM helpers shared by the gateway, the providers, the simulator and lip-sync.

Everything in talkgate moves audio as mono signed 16-bit little-endian PCM (``AudioData.pcm``);
these are the few conversions around it. They live here, beside ``providers.base``, because
every other package already depends on ``providers`` and none of them should depend on another
for a 44-byte header. Pure functions, no I/O, cheap enough to call on the event loop for the
sizes involved (a header, or a clip already in memory).
"""

from __future__ import annotations

import io
import struct
import wave

import numpy as np

#: Size field value for a stream whose length is not known yet (FFmpeg, browsers read to the end).
UNKNOWN_SIZE = 0xFFFFFFFF


def wav_header(sample_rate: int, data_bytes: int | None = None, channels: int = 1, bits: int = 16) -> bytes:
    """A 44-byte RIFF/WAVE PCM header; ``data_bytes=None`` marks an open-ended stream.

    A streamed header lets the first audio bytes leave before synthesis has finished.
    """
    block = channels * bits // 8
    data_size = UNKNOWN_SIZE if data_bytes is None else data_bytes
    riff_size = UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits)
        + b"data"
        + struct.pack("<I", data_size)
    )


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Mono 16-bit PCM → a complete WAV file with exact sizes."""
    return wav_header(sample_rate, len(pcm)) + pcm


def read_wav(data: bytes) -> tuple[bytes, int]:
    """A WAV file → (mono 16-bit PCM, sample rate); several channels are averaged to mono.

    Raises ValueError when ``data`` is not a WAV file or not 16-bit.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from exc
    if width != 2:
        raise ValueError(f"{8 * width}-bit WAV; expected 16-bit")
    if channels == 1:
        return frames, rate
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1)
    return samples.astype("<i2").tobytes(), rate


def wav_duration(data: bytes) -> float | None:
    """Seconds of audio behind a RIFF/WAVE header, tolerant of streaming sizes; None if not a WAV.

    Counts the data bytes actually present, so a streamed (open-ended) file measures what arrived.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk_id == b"fmt " and pos + 16 <= len(data):
            byte_rate = struct.unpack("<I", data[pos + 16 : pos + 20])[0]
        if chunk_id == b"data":
            available = len(data) - pos - 8
            return min(size, available) / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


def pcm16_to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    """Signed 16-bit PCM (bytes or int16 array) → float32 in [-1, 1)."""
    arr = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray | memoryview) else pcm
    return np.asarray(arr, dtype=np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] → int16 samples; out-of-range values are clipped, not wrapped."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


def resample(signal: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of float audio (e.g. piper's 22.05 kHz → 16 kHz); identity when rates match."""
    if src_rate == dst_rate or signal.size == 0:
        return np.asarray(signal, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly  # lazy: keeps scipy out of gateway start-up

    g = gcd(int(src_rate), int(dst_rate))
    return resample_poly(signal, dst_rate // g, src_rate // g).astype(np.float32)
