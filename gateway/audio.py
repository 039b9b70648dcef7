"""Audio codec: any uploaded container/codec in, mono 16-bit PCM out; PCM in, a streamed format out.

Providers speak only mono s16le PCM (``providers.base.AudioData``), so every format question
lives here. Decoding and encoding are CPU work done with PyAV (FFmpeg); the async helpers run
them on a small bounded thread pool so the event loop never stalls on a 25 MB upload.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import av
import numpy as np

from lipsync.labels import MediaLabel, labelled_wav_header
from providers.base import AudioData
from providers.wav import wav_header

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")

#: HTTP Content-Type per speech format (what OpenAI's endpoint answers).
CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

# container, codec, and the sample rates the codec accepts (None: any)
_ENCODERS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "mp3": ("mp3", "libmp3lame", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("ogg", "libopus", (8000, 12000, 16000, 24000, 48000)),
    "aac": ("adts", "aac", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "flac": ("flac", "flac", None),
}

#: The hard ceiling on decoded audio whatever a caller asks (routes pass their own, smaller,
#: limits from ``settings.limits``: gateway/inputs/audio.py).
MAX_DECODED_SECONDS = 4 * 3600
#: A declared duration within this share of the limit is let through to the exact check made
#: while decoding (some containers only estimate their duration from the bitrate).
DECLARED_SLACK = 1.1

T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None


class AudioDecodeError(ValueError):
    """The upload is empty, corrupt, or not audio in a format FFmpeg can read."""


class AudioTooLong(AudioDecodeError):
    """The audio is longer than the surface accepts, or expands far beyond its upload size."""


async def run_in_codec_pool(fn: Callable[..., T], *args: object) -> T:
    """Run CPU-bound codec work on the shared bounded pool (2 threads: one per core here)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="talkgate-codec")
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


# --------------------------------------------------------------------------- decoding


def decode_to_pcm(
    data: bytes,
    sample_rate: int = 16000,
    *,
    max_seconds: float = MAX_DECODED_SECONDS,
    max_expansion: float | None = None,
) -> AudioData:
    """Decode any container/codec FFmpeg knows into mono s16le PCM at ``sample_rate``.

    Length is bounded twice: by the duration the container declares, before anything is
    decoded, and by counting while decoding (a container may declare nothing, or lie), so at
    most ``max_seconds`` of PCM, and at most ``max_expansion`` times the upload's size (counted
    as 16 kHz PCM), is ever held. Raises AudioDecodeError (AudioTooLong for length) with a
    message a client can act on.
    """
    if not data:
        raise AudioDecodeError("The audio file is empty.")
    max_seconds = min(max_seconds, MAX_DECODED_SECONDS)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as exc:
        raise AudioDecodeError(
            f"The audio file could not be read: unsupported or corrupt format ({_ffmpeg_reason(exc)})."
        ) from exc
    with container:
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError("The file contains no audio stream.")
        stream = streams[0]
        declared = declared_seconds(container, stream)
        if declared is not None and declared > max_seconds * DECLARED_SLACK:
            raise AudioTooLong(
                f"The audio is {_duration(declared)} long; at most {_duration(max_seconds)} are accepted."
            )
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        out = bytearray()
        limit = int(max_seconds * sample_rate * 2)
        if max_expansion is not None:  # 16 kHz s16 is 32,000 bytes a second
            expansion_limit = int(max_expansion * len(data) * sample_rate / 16000)
            limit = min(limit, expansion_limit)
        decoded_frames = 0
        try:
            for frame in container.decode(stream):
                decoded_frames += 1
                for piece in resampler.resample(frame):
                    out += _frame_bytes(piece)
                if len(out) > limit:
                    raise _too_long(len(out), sample_rate, max_seconds, max_expansion)
            for piece in resampler.resample(None):
                out += _frame_bytes(piece)
            if len(out) > limit:
                raise _too_long(len(out), sample_rate, max_seconds, max_expansion)
        except av.error.FFmpegError as exc:
            if not out:
                raise AudioDecodeError(
                    f"The audio file is corrupt and could not be decoded ({_ffmpeg_reason(exc)})."
                ) from exc
            # A damaged tail: keep what decoded cleanly (players do the same).
    if not out:
        what = "no decodable audio frames" if decoded_frames == 0 else "no audio samples"
        raise AudioDecodeError(f"The audio file contains {what}.")
    return AudioData(pcm=bytes(out), sample_rate=sample_rate)


def declared_seconds(container: Any, stream: Any) -> float | None:
    """The duration the container or stream header states, if any (nothing is decoded)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _too_long(
    decoded: int, sample_rate: int, max_seconds: float, max_expansion: float | None
) -> AudioTooLong:
    seconds = decoded / (sample_rate * 2)
    if seconds <= max_seconds:
        return AudioTooLong(
            f"The audio decodes to more than {max_expansion:g} times its upload size; "
            "send it in a less extreme encoding."
        )
    return AudioTooLong(f"The audio is longer than {_duration(max_seconds)}, the most accepted here.")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:g} s"


def _frame_bytes(frame: av.AudioFrame) -> bytes:
    # Packed s16 mono: plane 0 holds exactly samples*2 meaningful bytes (the buffer may be padded).
    return bytes(frame.planes[0])[: frame.samples * 2]


def _ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- encoding


def wav_stream_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A RIFF/WAVE header for a stream of unknown length (sizes set to the 0xFFFFFFFF sentinel).

    Decoders (FFmpeg, browsers, soundfile) read such a file to its end; it lets the first
    audio bytes leave before synthesis has finished.
    """
    return wav_header(sample_rate, None, channels, bits)


class _Sink:
    """Write-only file object for PyAV: collects muxed bytes until drained (never seeks)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class StreamEncoder:
    """Incremental PCM → speech-format encoder: ``feed`` PCM pieces, then ``finish`` once.

    Each call returns whatever encoded bytes are ready, so a response body can be sent while
    synthesis is still running. Not thread-safe; one instance per response.
    """

    def __init__(self, fmt: str, sample_rate: int, label: MediaLabel | None = None) -> None:
        if fmt not in SPEECH_FORMATS:
            raise ValueError(f"unsupported speech format {fmt!r}")
        self.format = fmt
        self.input_rate = sample_rate
        self._started = False
        self._closed = False
        self._odd_byte = b""
        self._container = None
        self._stream = None
        self.label = label
        if fmt in _ENCODERS:
            container_fmt, codec, rates = _ENCODERS[fmt]
            self.output_rate = _pick_rate(sample_rate, rates)
            self._sink = _Sink()
            options = {"page_duration": "100000"} if container_fmt == "ogg" else {}
            self._container = av.open(self._sink, mode="w", format=container_fmt, options=options)
            if label is not None:  # the implicit AI-generated label (lipsync/labels.py)
                self._container.metadata.update(label.metadata())
            self._stream = self._container.add_stream(codec, rate=self.output_rate)
            self._stream.layout = "mono"
            self._resampler = (
                av.AudioResampler(format="s16", layout="mono", rate=self.output_rate)
                if self.output_rate != sample_rate
                else None
            )
            self._pts = 0
        else:
            self.output_rate = sample_rate

    def feed(self, pcm: bytes) -> bytes:
        if self._closed:
            raise RuntimeError("encoder already finished")
        if self._container is None:
            return self._raw(pcm)
        if self._odd_byte:
            pcm = self._odd_byte + pcm
            self._odd_byte = b""
        if len(pcm) % 2:  # a piece split inside a sample: keep the half for the next one
            pcm, self._odd_byte = pcm[:-1], pcm[-1:]
        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self.input_rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._encode(frame)
        return self._sink.drain()

    def finish(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        if self._container is None:
            return self._raw(b"")
        self._encode(None)
        self._container.close()
        return self._sink.drain()

    def close(self) -> None:
        """Release FFmpeg resources without flushing (aborted responses)."""
        if not self._closed and self._container is not None:
            self._closed = True
            try:
                self._container.close()
            except av.error.FFmpegError:
                pass

    def _raw(self, pcm: bytes) -> bytes:
        if self.format == "wav" and not self._started:
            self._started = True
            header = wav_stream_header(self.input_rate)
            return (labelled_wav_header(header, self.label) if self.label else header) + pcm
        return pcm

    def _encode(self, frame: av.AudioFrame | None) -> None:
        assert self._stream is not None and self._container is not None
        frames: list[av.AudioFrame | None]
        if self._resampler is not None:
            frames = list(self._resampler.resample(frame))
            if frame is None:
                frames.append(None)
        else:
            frames = [frame]
        for f in frames:
            if f is not None:
                f.pts = None  # let the encoder number samples itself after resampling
            for packet in self._stream.encode(f):
                self._container.mux(packet)


def _pick_rate(rate: int, allowed: tuple[int, ...] | None) -> int:
    """The input rate if the codec takes it, else the smallest allowed rate above it (or the top one)."""
    if allowed is None or rate in allowed:
        return rate
    higher = [r for r in allowed if r >= rate]
    return min(higher) if higher else max(allowed)
