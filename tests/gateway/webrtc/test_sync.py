"""Lip/audio sync of the live video track over more than a minute, and a face that idles.

A Python WebRTC peer asks for a long answer and records, by arrival time, the level of every
20 ms audio frame and the darkness of the mouth region of every video frame (an open mouth
shows its dark interior). The lag that best aligns the two series is measured over the first
and the last 20 s of the answer: if the two tracks drifted apart the lag would grow; it must
stay within one video frame (40 ms). The constant part of the lag is the receiving peer's
own jitter buffers (aiortc delays audio a few packets; a browser aligns the tracks with
RTCP sender reports) and is reported, not asserted tightly. After the answer, the face keeps
changing: no 400 ms span of it stands still, and the eyes blink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.gateway.webrtc.peer_client import LiveClient
from tests.lipsync.media import astronaut_png
from tests.lipsync.test_live import count_blinks

SENTENCE = (
    "Our store opens at nine in the morning and closes at eight in the evening, every day, "
    "and on holidays we open a little later, at ten, so that the staff can rest."
)
TALK = " ".join([SENTENCE] * 6)  # 76 s of the simulator's speech (12.6 s a sentence)
GRID_S = 0.01
FREEZE_FRAMES = 10  # 400 ms at 25 fps: a still span this long is a frozen face


def series(times: list[float], values: list[float], grid: np.ndarray) -> np.ndarray:
    out = np.interp(grid, np.asarray(times), np.asarray(values))
    return (out - out.mean()) / (out.std() + 1e-9)


def smooth(x: np.ndarray) -> np.ndarray:
    """120 ms envelope (as the /v1/talk correlation test smooths): syllables, not samples."""
    k = np.ones(12) / 12
    out = np.convolve(x, k, "same")
    return (out - out.mean()) / (out.std() + 1e-9)


def best_lag(
    audio: tuple[list[float], list[float]], video: tuple[list[float], list[float]], start: float, end: float
) -> tuple[float, float]:
    """(lag in seconds of video behind audio, correlation at that lag) over [start, end)."""
    grid = np.arange(start, end, GRID_S)
    a = smooth(series(*audio, grid))
    best = (0.0, -1.0)
    for lag in np.arange(-0.3, 0.3001, GRID_S):
        v = smooth(series(*video, grid + lag))
        corr = float(np.mean(a * v))
        if corr > best[1]:
            best = (float(lag), corr)
    return best


@pytest.fixture
def server(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any) -> Iterator[Any]:
    sim.control("PUT", "/sim/config", json={"answers": {"Talk to me.": TALK}}).raise_for_status()
    try:
        yield run_gateway(gateway_settings())
    finally:
        sim.control("DELETE", "/sim/config")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_lips_stay_with_the_audio_for_a_minute_and_the_idle_face_moves(server: Any) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(
            f"{server.url}/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")}
        )
    avatar = r.json()
    client = LiveClient(server.url, avatar)
    try:
        assert (await client.connect()).status_code == 201
        await client.wait_for("session.updated", 10)
        asked = time.monotonic()
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Talk to me."}],
                },
            }
        )
        client.send({"type": "response.create"})
        started, _ = await client.wait_for("output_audio_buffer.started", 30, asked)
        stopped, _ = await client.wait_for("output_audio_buffer.stopped", 150, started)
        await asyncio.sleep(12.0)  # listening
    finally:
        await client.close()
    rec = client.rec
    length = stopped - started
    assert length >= 60, f"the answer played {length:.1f} s; the test needs a minute"
    audio = ([t for t, _ in rec.audio], [rms for _, rms in rec.audio])
    motion = rec.mouth_motion(stopped + 2.0, stopped + 11.0)  # rest: while it listens afterwards
    video = ([t for t, _ in motion], [m for _, m in motion])
    early = best_lag(audio, video, started + 1, started + 21)
    late = best_lag(audio, video, stopped - 21, stopped - 1)
    print(
        f"answer {length:.1f} s; lag early {early[0] * 1000:.0f} ms (r={early[1]:.2f}), late {late[0] * 1000:.0f} ms (r={late[1]:.2f})"
    )
    assert early[1] > 0.4 and late[1] > 0.4, (early, late)  # the mouth follows the audio energy
    assert abs(late[0] - early[0]) <= 0.04, (early, late)  # no drift over the minute
    assert abs(early[0]) <= 0.15, early  # and no large constant offset either

    idle = [(t, eye, roi) for t, _, eye, roi in rec.video if t > stopped + 1.0]
    assert len(idle) > 200  # 25 fps kept while listening
    rois = np.array([roi for _, _, roi in idle])
    # VP8 leaves out sub-pixel steps of a slow sway (a few identical frames in a row near its
    # turning points; the renderer's own frames all differ), so a freeze is a still *span*:
    # every 400 ms apart (10 frames), the eyes must have moved.
    apart = np.abs(rois[FREEZE_FRAMES:] - rois[:-FREEZE_FRAMES]).mean(axis=(1, 2))
    still = int(np.argmin(apart))
    print(f"idle: least change over 400 ms {apart[still]:.3f}")
    assert apart[still] > 0.05, f"the face stood still from {idle[still][0] - stopped:.2f} s after the answer"
    blinks = count_blinks([eye for _, eye, _ in idle])
    assert blinks >= 2, blinks
