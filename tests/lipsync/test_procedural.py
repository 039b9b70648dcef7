"""The weightless renderer: mouth motion follows real speech (piper), and silence stays still."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lipsync.faces import precheck
from lipsync.mel import resample
from lipsync.procedural import ProceduralRenderer, mouth_track
from tests.lipsync.media import astronaut_bgr
from tests.sounds import piper_speech

SENTENCE = "Hello there. My mouth should move with every word I say, and stop in the pauses."


@pytest.fixture(scope="module")
def speech16k() -> np.ndarray:
    pytest.importorskip("piper")
    x, sr = piper_speech(SENTENCE)
    pad = np.zeros(8000, np.float32)  # 0.5 s of silence on both sides
    return np.concatenate([pad, resample(x, sr, 16000), pad])


def _frame_rms(x: np.ndarray, n: int, hop: int = 640) -> np.ndarray:
    return np.array([np.sqrt(np.mean(x[i * hop : (i + 1) * hop] ** 2)) for i in range(n)])


def test_mouth_motion_correlates_with_speech_energy(speech16k: np.ndarray) -> None:
    img = astronaut_bgr()
    box = precheck(img)
    avatar = SimpleNamespace(id="astro", image=img, box=box)
    frames = np.stack(list(ProceduralRenderer(fps=25).render(avatar, speech16k))).astype(np.float32)
    n = len(frames)
    assert n == round(speech16k.size / 640)
    assert frames.shape[1:] == img.shape

    lower = (slice(None), slice(box.y1 + box.height // 2, box.y2 + box.height // 4), slice(box.x1, box.x2))
    mouth = frames[lower]
    still = img[lower[1:]].astype(np.float32)
    change = np.r_[0.0, np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2, 3))]  # frame to frame
    deviation = np.abs(mouth - still).mean(axis=(1, 2, 3))  # how far the mouth is from rest
    energy = _frame_rms(speech16k, n)

    r_change = np.corrcoef(change, energy)[0, 1]
    k = np.ones(5) / 5  # 200 ms envelopes
    r_envelope = np.corrcoef(np.convolve(change, k, "same"), np.convolve(energy, k, "same"))[0, 1]
    r_opening = np.corrcoef(deviation, energy)[0, 1]
    assert r_change > 0.25, r_change
    assert r_envelope > 0.5, r_envelope
    assert r_opening > 0.6, r_opening
    # The leading half second of silence is the untouched portrait; outside the face nothing moves.
    assert np.array_equal(frames[:10], np.broadcast_to(img, (10, *img.shape)))
    assert np.array_equal(
        frames[:, : box.y1 + box.height // 3],
        np.broadcast_to(img, frames.shape)[:, : box.y1 + box.height // 3],
    )


def test_louder_speech_opens_the_mouth_wider() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    voiced = np.sin(2 * np.pi * 150 * t) + 0.3 * rng.standard_normal(t.size)
    quiet = mouth_track((0.01 * voiced).astype(np.float32), 16000, 25)
    loud = mouth_track((0.3 * voiced).astype(np.float32), 16000, 25)
    assert loud.opening[5:-5].mean() > quiet.opening[5:-5].mean() + 0.3
    assert mouth_track(np.zeros(16000, np.float32), 16000, 25).opening.max() == 0.0


def test_fixed_frame_count_and_stage_timings(speech16k: np.ndarray) -> None:
    img = astronaut_bgr()
    avatar = SimpleNamespace(id="astro2", image=img, box=precheck(img))
    timings: dict[str, float] = {}
    frames = list(ProceduralRenderer().render(avatar, speech16k[:16000], n_frames=30, timings=timings))
    assert len(frames) == 30
    assert set(timings) == {"mel", "model", "paste"} and all(v >= 0 for v in timings.values())
