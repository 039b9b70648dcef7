"""A Python WebRTC peer for the live-call tests and bench/live.py: aiortc on the client side.

It does what the page does (SDP offer with a microphone track, a receive-only video
transceiver and the ``oai-events`` channel, posted to ``/v1/realtime/calls``) and records
what arrives with its arrival time: every 20 ms audio frame's level, every video frame's
mouth and eye regions, every event. Times are ``time.monotonic()`` on this machine, the same
clock the microphone uses, so "end of the person's speech → first answer audio" is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from lipsync.faces import Box
from lipsync.live import find_eyes
from lipsync.procedural import MOUTH_HALF_WIDTH, MOUTH_X, MOUTH_Y

RATE = 48000
FRAME = 960


class FileMicrophone(MediaStreamTrack):
    """A live microphone that says what it is given (float mono 48 kHz), silence otherwise.

    ``ends`` gets the monotonic time at which each utterance's last sample was sent."""

    kind = "audio"

    def __init__(self, samples: np.ndarray | None = None) -> None:
        super().__init__()
        self.queue = np.zeros(0, "<i2")
        self.n = 0
        self.t0: float | None = None
        self.ends: list[float] = []
        if samples is not None:
            self.say(samples)

    def say(self, samples: np.ndarray) -> None:
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
        self.queue = np.concatenate([self.queue, pcm])

    async def recv(self) -> av.AudioFrame:
        if self.t0 is None:
            self.t0 = time.monotonic()
        delay = self.t0 + self.n * FRAME / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        speaking = self.queue.size > 0
        chunk, self.queue = self.queue[:FRAME], self.queue[FRAME:]
        if chunk.size < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - chunk.size, "<i2")])
        if speaking and self.queue.size == 0:
            self.ends.append(time.monotonic())
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.n * FRAME, fractions.Fraction(1, RATE)
        self.n += 1
        return frame


@dataclass
class Recording:
    audio: list[tuple[float, float]] = field(default_factory=list)  # (arrival, rms) per frame
    video: list[tuple[float, float, float, np.ndarray]] = field(
        default_factory=list
    )  # arrival, mouth, eyes, eye roi
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    size: tuple[int, int] | None = None

    def mouth_motion(self, rest_from: float, rest_to: float) -> list[tuple[float, float]]:
        """(arrival, how far the mouth region is from its look at rest) per video frame; rest is
        the median mouth of the frames that arrived in [rest_from, rest_to)."""
        rest = np.median([m for t, m, *_ in self.video if rest_from <= t < rest_to], axis=0)
        return [(t, float(np.abs(m - rest).mean())) for t, m, *_ in self.video]

    def first_event(self, kind: str, after: float = 0.0) -> tuple[float, dict[str, Any]] | None:
        return next(((t, e) for t, e in self.events if e.get("type") == kind and t >= after), None)


class Regions:
    """Mouth and eye boxes of the avatar in the video's pixels (from the avatar's face box and
    the renderer's own eye finder run on the first frame)."""

    def __init__(self, avatar: dict[str, Any], first: np.ndarray) -> None:
        sx, sy = first.shape[1] / avatar["width"], first.shape[0] / avatar["height"]
        x1, y1, x2, y2 = avatar["box"]
        box = Box(round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))
        mx, my = box.x1 + MOUTH_X * box.width, box.y1 + MOUTH_Y * box.height
        hw = MOUTH_HALF_WIDTH * box.width * 0.7
        self.mouth = (int(mx - hw), int(my - 0.02 * box.height), int(mx + hw), int(my + 0.07 * box.height))
        cx, cy, ew = find_eyes(first, box)[0]
        eh = 0.6 * ew
        self.eyes = [(int(cx - ew), int(cy - eh), int(cx + ew), int(cy + eh))]


class LiveClient:
    def __init__(
        self,
        base_url: str,
        avatar: dict[str, Any] | None,
        microphone: np.ndarray | None = None,
        key: str | None = None,
    ):
        self.base_url = base_url
        self.avatar = avatar
        self.mic = FileMicrophone(microphone)
        self.key = key
        self.pc = RTCPeerConnection()
        self.rec = Recording()
        self.regions: Regions | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.channel: Any = None
        self.opened = asyncio.Event()

    async def connect(self, session: dict[str, Any] | None = None) -> httpx.Response:
        pc = self.pc
        self.channel = pc.createDataChannel("oai-events")
        self.channel.on("open", self.opened.set)

        @self.channel.on("message")
        def on_message(message: str) -> None:
            self.rec.events.append((time.monotonic(), json.loads(message)))

        @pc.on("track")
        def on_track(track: Any) -> None:
            reader = self._audio if track.kind == "audio" else self._video
            self.tasks.append(asyncio.ensure_future(reader(track)))

        pc.addTrack(self.mic)
        if self.avatar is not None:
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        params = {"avatar_id": self.avatar["id"]} if self.avatar else {}
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        async with httpx.AsyncClient(timeout=30) as http:
            if session is None:
                r = await http.post(
                    f"{self.base_url}/v1/realtime/calls",
                    params=params,
                    content=pc.localDescription.sdp,
                    headers={**headers, "content-type": "application/sdp"},
                )
            else:
                r = await http.post(
                    f"{self.base_url}/v1/realtime/calls",
                    params=params,
                    files={
                        "sdp": (None, pc.localDescription.sdp, "application/sdp"),
                        "session": (None, json.dumps(session), "application/json"),
                    },
                    headers=headers,
                )
        if r.status_code == 201:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
            await asyncio.wait_for(self.opened.wait(), 20)
        return r

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def _audio(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().astype(np.float32).ravel() / 32768.0
                self.rec.audio.append((time.monotonic(), float(np.sqrt(np.mean(pcm**2)))))

    async def _video(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                gray = frame.to_ndarray(format="gray")
                if self.regions is None and self.avatar is not None:
                    self.rec.size = (gray.shape[1], gray.shape[0])
                    self.regions = Regions(self.avatar, frame.to_ndarray(format="bgr24"))
                assert self.regions is not None
                x1, y1, x2, y2 = self.regions.mouth
                mouth = gray[y1:y2, x1:x2].astype(np.float32)
                ex1, ey1, ex2, ey2 = self.regions.eyes[0]
                eye = gray[ey1:ey2, ex1:ex2].astype(np.float32)
                self.rec.video.append((now, mouth, float(eye.mean()), eye))

    async def wait_for(self, kind: str, within: float, after: float = 0.0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.rec.first_event(kind, after)
            if found:
                return found
            await asyncio.sleep(0.02)
        raise TimeoutError(
            f"no {kind} within {within:g} s; saw {[e.get('type') for _, e in self.rec.events][-15:]}"
        )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
