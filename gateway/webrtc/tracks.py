"""The media of one live call: the microphone sink, the speech buffer and the two outgoing tracks.

Audio is the clock. ``SpeechBuffer`` holds the answer's audio (48 kHz mono PCM16) and hands it
out in 20 ms frames by *media index*: frame ``n`` plays at ``t0 + n * 20 ms`` on one shared
``MediaClock``. The audio track asks for frame ``n`` when it is due; the video track asks for
the audio frames its picture spans and draws the mouth from exactly those samples. Whichever
asks first takes the samples out of the queue and both get the same ones, so what is seen is
what is heard, with no second clock to drift. The audio track never waits for the video (it
only sleeps until its own frame is due; silence on underrun); the video track renders in a
worker thread and, when rendering falls behind, skips to the frame that is due now (frames are
dropped, never audio). ``clear`` empties the queue for barge-in: the next 20 ms frame is silence.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from gateway.realtime.audio import Resampler

#: Output audio: Opus's native rate, 20 ms frames.
OUT_RATE = 48000
FRAME_SAMPLES = 960
FRAME_S = FRAME_SAMPLES / OUT_RATE
FRAME_BYTES = FRAME_SAMPLES * 2
#: The realtime session's PCM rate (input buffer and output deltas).
PCM_RATE = 24000
#: Microphone audio is handed to the session in 40 ms pieces (the VAD works in 32 ms windows).
MIC_CHUNK_BYTES = PCM_RATE * 2 * 40 // 1000
#: Audio frames remembered after they were taken (the slower track may still ask for them).
KEEP_FRAMES = 100
VIDEO_CLOCK = 90000
#: Past this lateness the audio track re-anchors to the clock (a stalled event loop must not
#: make it burst a second of frames; receivers' jitter buffers absorb less than that).
MAX_LATE_S = 0.12
_SILENCE = bytes(FRAME_BYTES)


class MediaClock:
    """One start time for both tracks; set by whichever track asks first."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def start(self) -> float:
        if self.t0 is None:
            self.t0 = time.monotonic()
        return self.t0

    def now(self) -> float:
        """Media seconds since the start."""
        return time.monotonic() - self.start()


class SpeechBuffer:
    """The answer audio waiting to be sent, handed out in 20 ms frames by media index.

    ``on_state(name, response_id)`` is called with ``started`` when a frame with speech is
    taken after silence and ``stopped`` when the queue runs dry after speech (the page's
    per-turn latency and the listening face come from these).
    """

    def __init__(self, on_state: Callable[[str, str | None], None] | None = None) -> None:
        self.pending = bytearray()
        self.frames: OrderedDict[int, bytes] = OrderedDict()
        self.taken = 0  # next media index to take from ``pending``
        self.response_id: str | None = None
        self.speaking = False
        self.on_state = on_state
        self.first_speech_at: float | None = None  # monotonic time the last answer began to play
        self.last_speech_index = -1
        self.played = 0  # bytes of the current response taken for playing

    def push(self, pcm48: bytes, response_id: str | None) -> None:
        if response_id != self.response_id:
            self.played = 0
        self.pending += pcm48
        self.response_id = response_id

    @property
    def played_ms(self) -> int:
        """Milliseconds of the current response's audio handed to the tracks so far."""
        return self.played * 1000 // (OUT_RATE * 2)

    def clear(self) -> int:
        """Drops the queued audio (barge-in); returns the milliseconds dropped."""
        dropped = len(self.pending) * 1000 // (OUT_RATE * 2)
        self.pending.clear()
        if self.speaking:
            self.speaking = False
        return dropped

    def frame(self, n: int) -> bytes:
        """The 20 ms of PCM that plays at media index ``n`` (silence if nothing was queued)."""
        while self.taken <= n:
            self._take()
        return self.frames.get(n, _SILENCE)

    def skip_to(self, n: int) -> None:
        """The media clock jumped to ``n`` (the sender stalled): the missed slots are silence and
        the queued speech waits, so a stall delays the answer instead of bursting it out."""
        while self.taken < n:
            self.frames[self.taken] = _SILENCE
            self.taken += 1
        while len(self.frames) > KEEP_FRAMES:
            self.frames.popitem(last=False)

    def _take(self) -> None:
        if self.pending:
            chunk = bytes(self.pending[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            del self.pending[:FRAME_BYTES]
            self.played += FRAME_BYTES
            self.last_speech_index = self.taken
            if not self.speaking:
                self.speaking = True
                self.first_speech_at = time.monotonic()
                if self.on_state:
                    self.on_state("started", self.response_id)
        else:
            chunk = _SILENCE
            if self.speaking:
                self.speaking = False
                if self.on_state:
                    self.on_state("stopped", self.response_id)
        self.frames[self.taken] = chunk
        self.taken += 1
        while len(self.frames) > KEEP_FRAMES:
            self.frames.popitem(last=False)

    def span(self, start_s: float, end_s: float) -> np.ndarray:
        """Float mono samples of media time [start_s, end_s) (takes frames not yet taken)."""
        first, last = int(start_s / FRAME_S), int((end_s - 1e-9) / FRAME_S)
        pcm = b"".join(self.frame(i) for i in range(first, last + 1))
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        offset = round((start_s - first * FRAME_S) * OUT_RATE)
        return samples[offset : offset + round((end_s - start_s) * OUT_RATE)]


class SpeechTrack(MediaStreamTrack):
    """Outgoing audio: 48 kHz mono 20 ms frames, paced by the media clock (Opus in aiortc)."""

    kind = "audio"

    def __init__(self, clock: MediaClock, buffer: SpeechBuffer) -> None:
        super().__init__()
        self.clock = clock
        self.buffer = buffer
        self.n = 0
        self.skipped = 0  # 20 ms slots jumped over after stalls (no audio is lost: it waits)
        self.time_base = fractions.Fraction(1, OUT_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        t0 = self.clock.start()
        delay = t0 + self.n * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > MAX_LATE_S:  # stalled: re-anchor instead of bursting frames out
            due = int((time.monotonic() - t0) / FRAME_S)
            self.buffer.skip_to(due)
            self.skipped += due - self.n
            self.n = due
        pcm = self.buffer.frame(self.n)
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = OUT_RATE
        frame.pts = self.n * FRAME_SAMPLES
        frame.time_base = self.time_base
        self.n += 1
        return frame


class AvatarTrack(MediaStreamTrack):
    """Outgoing video: the avatar drawn from the audio of each frame's span, at ``fps``."""

    kind = "video"

    def __init__(self, clock: MediaClock, buffer: SpeechBuffer, face: Any, fps: float) -> None:
        super().__init__()
        self.clock = clock
        self.buffer = buffer
        self.face = face
        self.fps = fps
        self.k = 0
        self.dropped = 0
        self.rendered = 0
        self.render_s = 0.0  # CPU seconds spent drawing (bench/live.py reads it)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar")
        self.time_base = fractions.Fraction(1, VIDEO_CLOCK)

    def _draw(self, audio: np.ndarray, t: float) -> np.ndarray:
        start = time.thread_time()
        image = self.face.frame(audio, OUT_RATE, t)
        self.render_s += time.thread_time() - start
        return image

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        t0 = self.clock.start()
        period = 1.0 / self.fps
        delay = t0 + self.k * period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > period:  # behind: skip to the frame that is due now
            due = int((time.monotonic() - t0) * self.fps)
            self.dropped += due - self.k
            self.k = due
        t = self.k * period
        audio = self.buffer.span(t, t + period)
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(self.executor, self._draw, audio, t)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = round(t * VIDEO_CLOCK)
        frame.time_base = self.time_base
        self.k += 1
        self.rendered += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def pump_microphone(track: MediaStreamTrack, feed: Callable[[bytes], Awaitable[None]]) -> None:
    """Reads the browser's microphone track until it ends; 24 kHz mono PCM16 to ``feed`` in 40 ms pieces."""
    resampler = Resampler(PCM_RATE)
    pending = bytearray()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        pending += resampler.frame(frame)
        while len(pending) >= MIC_CHUNK_BYTES:
            chunk = bytes(pending[:MIC_CHUNK_BYTES])
            del pending[:MIC_CHUNK_BYTES]
            await feed(chunk)
