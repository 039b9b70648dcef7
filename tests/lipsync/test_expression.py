"""Expressions of the procedural renderer, measured on rendered frames of the astronaut portrait.

Brow and mouth-corner heights are measured by phase correlation of small patches against the
untouched portrait, relative to a nose patch (which moves only with the head sway), so the
numbers are pixel displacements a person would see. The frames are saved for a person to look
at under ``$TALKGATE_TEST_ARTIFACTS`` (default ``.cache/test-artifacts``)/expressions/.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from lipsync.expression import EXPRESSIONS, ExpressionState
from lipsync.faces import precheck
from lipsync.procedural import ProceduralRenderer
from tests.lipsync.media import astronaut_bgr

ARTIFACTS = Path(
    os.environ.get("TALKGATE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".cache/test-artifacts")
)
FPS = 25


@pytest.fixture(scope="module")
def avatar() -> Any:
    img = astronaut_bgr()
    return SimpleNamespace(id="astro", image=img, box=precheck(img))


def vertical_shift(img: np.ndarray, frame: np.ndarray, box: Any, cx: float, cy: float) -> float:
    """How far the content around (cx, cy) (box fractions) moved up in ``frame`` (pixels; > 0 = up):
    the sub-pixel shift of the portrait's patch that best matches the frame's (least mean |diff|),
    searched in both directions so the head sway's sideways drift does not bias it."""
    half_w, half_h, margin = 0.07 * box.width, 0.05 * box.height, 12
    x0, x1 = int(box.x1 + cx * box.width - half_w), int(box.x1 + cx * box.width + half_w)
    y0, y1 = int(box.y1 + cy * box.height - half_h), int(box.y1 + cy * box.height + half_h)
    target = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[y0:y1, x0:x1].astype(np.float32)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    source = gray[y0 - margin : y1 + margin, x0 - margin : x1 + margin]
    best, best_err = 0.0, np.inf
    for up in np.arange(-8.0, 8.01, 0.25):
        for right in np.arange(-2.0, 2.01, 0.25):
            moved = cv2.warpAffine(source, np.float32([[1, 0, right], [0, 1, -up]]), source.shape[::-1])
            err = float(np.abs(moved[margin:-margin, margin:-margin] - target).mean())
            if err < best_err:
                best, best_err = float(up), err
    return best


def patch(img: np.ndarray, box: Any, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    h, w = box.height, box.width
    return img[int(box.y1 + y0 * h) : int(box.y1 + y1 * h), int(box.x1 + x0 * w) : int(box.x1 + x1 * w)]


#: measurement points (box fractions): nose (moves only with the sway), brows, mouth corners
POINTS = {"nose": (0.5, 0.45), "brow_outer": (0.23, 0.20), "brow_inner": (0.40, 0.21), "corner": (0.27, 0.65)}


def geometry(img: np.ndarray, frame: np.ndarray, box: Any) -> dict[str, float]:
    shifts = {name: vertical_shift(img, frame, box, *p) for name, p in POINTS.items()}
    nose = shifts.pop("nose")
    return {name: value - nose for name, value in shifts.items()}


def settled_frame(avatar: Any, emotion: str, frames: int = 30) -> np.ndarray:
    """The last of ``frames`` silent frames (mouth at rest) once the expression has eased in; no
    blink on it (a blink would cover the measurement of nothing here, but keeps the picture clean)."""
    state = ExpressionState(emotion, fps=FPS, seed=3)
    state._next_blink = 10_000  # no blink in this short clip
    silence = np.zeros(16000 * frames // FPS, np.float32)
    return list(ProceduralRenderer(fps=FPS).render(avatar, silence, frames, expression=state))[-1]


def test_each_emotion_moves_brows_and_mouth_corners_its_own_way(avatar: Any) -> None:
    out = ARTIFACTS / "expressions"
    out.mkdir(parents=True, exist_ok=True)
    measured: dict[str, dict[str, float]] = {}
    tiles = []
    for emotion in EXPRESSIONS:
        frame = settled_frame(avatar, emotion)
        cv2.imwrite(str(out / f"{emotion}.png"), frame)
        tiles.append(
            cv2.putText(frame.copy(), emotion, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        )
        measured[emotion] = geometry(avatar.image, frame, avatar.box)  # pixels, > 0 = up
    cv2.imwrite(str(out / "sheet.png"), np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])]))
    (out / "geometry.txt").write_text("\n".join(f"{k}: {v}" for k, v in measured.items()) + "\n")

    m = measured
    for value in m["neutral"].values():  # neutral: the portrait as it is (only the sway moved it)
        assert abs(value) <= 0.5, m
    assert m["surprised"]["brow_outer"] > 1.0 and m["surprised"]["brow_inner"] > 2.0, m  # AU1+2
    assert m["angry"]["brow_outer"] < -1.0 and m["angry"]["brow_inner"] < -2.0, m  # AU4
    assert m["sad"]["brow_inner"] > 0.75 and m["sad"]["brow_inner"] > m["sad"]["brow_outer"] + 1.0, m  # AU1
    assert m["happy"]["corner"] > 1.0 and m["gentle"]["corner"] > 0.5, m  # AU12
    assert m["sad"]["corner"] < -1.0 and m["angry"]["corner"] < -0.5, m  # AU15
    corners = [m[e]["corner"] for e in ("happy", "gentle", "neutral", "angry", "sad")]
    assert corners == sorted(corners, reverse=True), m


def test_blinks_are_natural_and_visible(avatar: Any) -> None:
    state = ExpressionState("neutral", fps=FPS, seed=11)
    closures = [state.step()[1] for _ in range(FPS * 120)]  # two minutes
    starts = [i for i in range(1, len(closures)) if closures[i] > 0 and closures[i - 1] == 0]
    per_min = len(starts) / 2
    assert 12 <= per_min <= 24, per_min  # resting conversation: ~15-20 a minute
    gaps = np.diff(starts) / FPS
    assert gaps.min() >= 0.6 and np.std(gaps) / np.mean(gaps) > 0.25  # jittered, never periodic
    talking = ExpressionState("angry", fps=FPS, seed=11)
    assert sum(1 for _ in range(FPS * 120) if talking.step()[1] == 1.0) > 0

    # on a rendered frame, a closed eye differs from an open one around the eyes only
    state = ExpressionState("neutral", fps=FPS, seed=5)
    state._next_blink = 10
    silence = np.zeros(16000 * 14 // FPS, np.float32)
    frames = list(ProceduralRenderer(fps=FPS).render(avatar, silence, 14, expression=state))
    closed, opened = frames[11].astype(int), frames[9].astype(int)
    eyes = patch(np.abs(closed - opened), avatar.box, 0.15, 0.85, 0.24, 0.34).mean()
    chin = patch(np.abs(closed - opened), avatar.box, 0.3, 0.7, 0.85, 0.95).mean()
    assert eyes > 4 * max(chin, 0.25), (eyes, chin)
    cv2.imwrite(str(ARTIFACTS / "expressions" / "blink.png"), np.hstack([frames[9], frames[11]]))


def test_expressions_off_renders_the_plain_portrait(avatar: Any) -> None:
    state = ExpressionState("happy", fps=FPS, enabled=False)
    silence = np.zeros(16000, np.float32)
    frames = list(ProceduralRenderer(fps=FPS).render(avatar, silence, 25, expression=state))
    assert all(np.array_equal(f, avatar.image) for f in frames)


def test_wav2lip_renders_get_brows_and_lids(avatar: Any) -> None:
    """Wav2Lip pastes its mouth into the lower face; the brows above it follow the emotion. The
    network runs with random weights (no licensed checkpoint in tests): the paste is real."""
    pytest.importorskip("torch")
    from lipsync.engine import Wav2LipEngine
    from lipsync.render import Wav2LipRenderer

    renderer = Wav2LipRenderer(Wav2LipEngine.with_random_weights("cpu", batch_size=32), fps=FPS)
    w2l = SimpleNamespace(id="astro-w2l", image=avatar.image, box=avatar.box, crop=_crop(avatar))
    silence = np.zeros(16000 * 30 // FPS, np.float32)
    shift: dict[str, dict[str, float]] = {}
    for emotion in ("neutral", "surprised", "angry"):
        state = ExpressionState(emotion, fps=FPS, seed=3)
        state._next_blink = 10_000
        frame = list(renderer.render(w2l, silence, 30, expression=state))[-1]
        # no sway on Wav2Lip frames: the brows are measured against the portrait itself
        shift[emotion] = {
            k: vertical_shift(avatar.image, frame, avatar.box, *POINTS[k])
            for k in ("brow_outer", "brow_inner")
        }
    assert all(abs(v) <= 0.25 for v in shift["neutral"].values()), shift
    assert shift["surprised"]["brow_outer"] > 1.0 and shift["surprised"]["brow_inner"] > 2.0, shift
    assert shift["angry"]["brow_outer"] < -1.0 and shift["angry"]["brow_inner"] < -2.0, shift


def _crop(avatar: Any) -> np.ndarray:
    b = avatar.box
    return cv2.resize(avatar.image[b.y1 : b.y2, b.x1 : b.x2], (96, 96), interpolation=cv2.INTER_AREA)
