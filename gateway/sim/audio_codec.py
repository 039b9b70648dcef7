"""Audio encoding for simulated TTS frames and duration probing for simulated ASR.

Encoders are incremental, one per synthesis task: ``encode(pcm)`` returns the bytes ready so far,
``finish()`` the rest. Only the first output of a wav stream carries the RIFF header (sizes set to
0xFFFFFFFF, the usual convention for a stream of unknown length); mp3 is a continuous MPEG stream
(LAME), opus an Ogg Opus stream. PyAV does the real encoding, so the output decodes anywhere.
"""

from __future__ import annotations

import io

import av
import numpy as np

from providers.wav import pcm_to_wav, wav_duration, wav_header

TTS_FORMATS = ("pcm", "wav", "mp3", "opus")
MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/ogg"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def wav_file(pcm: np.ndarray, sample_rate: int) -> bytes:
    """A complete WAV file from int16 samples."""
    return pcm_to_wav(pcm.astype("<i2").tobytes(), sample_rate)


def check_format(fmt: str, sample_rate: int) -> str | None:
    """Why this format/rate pair cannot be produced, or None if it can."""
    if fmt not in TTS_FORMATS:
        return f"unsupported audio format '{fmt}', expected one of {', '.join(TTS_FORMATS)}"
    if not 8000 <= sample_rate <= 48000:
        return f"sample_rate {sample_rate} is out of range [8000, 48000]"
    if fmt == "mp3" and sample_rate not in MP3_RATES:
        return f"sample_rate {sample_rate} is not supported for mp3"
    if fmt == "opus" and sample_rate not in OPUS_RATES:
        return f"sample_rate {sample_rate} is not supported for opus"
    return None


class StreamEncoder:
    """Incremental encoder for one synthesis task."""

    def __init__(self, fmt: str, sample_rate: int, bit_rate: int | None = None) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._started = False
        self._codec: av.AudioCodecContext | None = None
        self._container: av.container.OutputContainer | None = None
        self._buffer: io.BytesIO | None = None
        self._pts = 0
        if fmt == "mp3":
            codec = av.CodecContext.create("libmp3lame", "w")
            codec.sample_rate = sample_rate
            codec.layout = "mono"
            codec.format = "s16p"
            codec.bit_rate = bit_rate or (64000 if sample_rate <= 24000 else 128000)
            self._codec = codec
        elif fmt == "opus":
            self._buffer = io.BytesIO()
            self._container = av.open(self._buffer, "w", format="ogg", options={"page_duration": "20000"})
            stream = self._container.add_stream("libopus", rate=sample_rate, layout="mono")
            stream.bit_rate = bit_rate or 32000
            self._stream = stream

    def _frame(self, pcm: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(pcm.astype("<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(pcm)
        return frame

    def _drain_container(self) -> bytes:
        assert self._buffer is not None
        data = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return data

    def encode(self, pcm: np.ndarray) -> bytes:
        if self.fmt in ("pcm", "wav"):
            data = pcm.astype("<i2").tobytes()
            if self.fmt == "wav" and not self._started:
                data = wav_header(self.sample_rate) + data
            self._started = True
            return data
        if len(pcm) == 0:
            return b""
        if self._codec is not None:
            return b"".join(bytes(p) for p in self._codec.encode(self._frame(pcm)))
        assert self._container is not None
        for packet in self._stream.encode(self._frame(pcm)):
            self._container.mux(packet)
        return self._drain_container()

    def finish(self) -> bytes:
        if self._codec is not None:
            data = b"".join(bytes(p) for p in self._codec.encode(None))
            self._codec = None
            return data
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            return self._drain_container()
        return b""


def encode_whole(pcm: np.ndarray, fmt: str, sample_rate: int) -> bytes:
    """A complete file in ``fmt`` (wav gets exact header sizes)."""
    if fmt == "wav":
        return wav_file(pcm, sample_rate)
    encoder = StreamEncoder(fmt, sample_rate)
    return encoder.encode(pcm) + encoder.finish()


def audio_duration(data: bytes, fmt: str | None, sample_rate: int = 16000) -> float:
    """Seconds of audio in ``data``. Raw pcm is s16 mono at ``sample_rate``; containers are probed.

    Raises ValueError when the bytes cannot be decoded. CPU-bound for compressed input: run in a thread.
    """
    if not data:
        return 0.0
    wav = wav_duration(data)
    if wav is not None:
        return wav
    if fmt in (None, "pcm", "raw", "s16le"):
        return len(data) / (2 * sample_rate)
    try:
        with av.open(io.BytesIO(data)) as container:
            samples, rate = 0, 0
            for frame in container.decode(audio=0):
                samples += frame.samples
                rate = frame.sample_rate
        return samples / rate if rate else 0.0
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise ValueError(f"cannot decode {fmt} audio: {exc}") from exc
