"""MP4 (H.264 + AAC) writing with PyAV, segment by segment, keeping picture and sound aligned.

The talk pipeline appends one segment per sentence. ``frames_for`` tells the renderer how
many frames the next stretch of audio needs, counted from the running totals so rounding
never accumulates; ``close`` pads the audio to a whole AAC frame and the video to match,
so |video − audio| stays within one video frame (40 ms at 25 fps).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipsync.labels import MediaLabel
from providers.wav import float_to_pcm16

AUDIO_RATE = 24000  # output AAC rate; segments at other rates are resampled
AAC_FRAME = 1024


class Mp4Writer:
    """One MP4 file: ``write`` segments in order, then ``close``."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        *,
        fps: int = 25,
        sample_rate: int = AUDIO_RATE,
        crf: int = 23,
        preset: str = "veryfast",
        label: MediaLabel | None = None,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 4:2:0 needs even dimensions, got {width}×{height}")
        self.path = Path(path)
        self.fps = fps
        self.sample_rate = sample_rate
        self.width, self.height = width, height
        # use_metadata_tags: the label's own keys (ai_generated, consent_id, ...) are written too
        movflags = "+faststart+use_metadata_tags" if label is not None else "+faststart"
        self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": movflags})
        if label is not None:  # the implicit AI-generated label (lipsync/labels.py)
            self._container.metadata.update(label.metadata())
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset}
        self._audio = self._container.add_stream("aac", rate=sample_rate)
        self._audio.layout = "mono"
        self._audio.bit_rate = 64000
        self.frames_written = 0
        self.samples_written = 0
        self._last_frame: np.ndarray | None = None
        self._closed = False

    # ------------------------------------------------------------------ planning

    def frames_for(self, n_samples: int) -> int:
        """Video frames the next ``n_samples`` of output-rate audio should get."""
        target = round((self.samples_written + n_samples) * self.fps / self.sample_rate)
        return max(0, target - self.frames_written)

    @property
    def video_seconds(self) -> float:
        return self.frames_written / self.fps

    @property
    def audio_seconds(self) -> float:
        return self.samples_written / self.sample_rate

    # ------------------------------------------------------------------ writing

    def write(self, frames: Iterable[np.ndarray], audio: np.ndarray) -> None:
        """Append BGR frames and mono float audio (at ``sample_rate``) covering the same time."""
        self._write_audio(np.asarray(audio, dtype=np.float32))
        for frame in frames:
            self._write_frame(frame)

    def _write_frame(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame is {frame.shape[1]}×{frame.shape[0]}, expected {self.width}×{self.height}"
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        vf.pts = self.frames_written
        vf.time_base = Fraction(1, self.fps)
        self._mux(self._video.encode(vf))
        self.frames_written += 1
        self._last_frame = frame

    def _write_audio(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        pcm = float_to_pcm16(audio)[None, :]
        af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self.samples_written
        af.time_base = Fraction(1, self.sample_rate)
        self._mux(self._audio.encode(af))
        self.samples_written += audio.size

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        """Pad to a whole AAC frame, equalise the video, flush and finish the file."""
        if self._closed:
            return
        self._closed = True
        try:
            remainder = self.samples_written % AAC_FRAME
            if remainder or self.samples_written == 0:
                self._write_audio(np.zeros(AAC_FRAME - remainder, dtype=np.float32))
            missing = round(self.audio_seconds * self.fps) - self.frames_written
            filler = (
                self._last_frame
                if self._last_frame is not None
                else np.zeros((self.height, self.width, 3), dtype=np.uint8)
            )
            for _ in range(max(0, missing)):
                self._write_frame(filler)
            self._mux(self._video.encode(None))
            self._mux(self._audio.encode(None))
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close without finishing (on error); the partial file is removed."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:
                pass
        self.path.unlink(missing_ok=True)


def probe_durations(path: str | Path) -> tuple[float, float]:
    """(video seconds, audio seconds) by decoding: frames / fps and samples / rate."""
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        n_frames = sum(1 for _ in container.decode(v))
        fps = float(v.average_rate or v.guessed_rate or 25)
    with av.open(str(path)) as container:
        a = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(a))
        rate = a.rate
    return n_frames / fps, samples / rate
