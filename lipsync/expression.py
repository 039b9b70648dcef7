"""Facial expression for the procedural renderer: brows, eyelids with blinking, mouth corners, head sway.

Why these controls: the facial action units that tell the basic emotions apart on a 2D face are
few (reference voice-emotion.md §4.3): inner/outer brow raise (AU1/AU2, sadness and surprise),
brow lowering (AU4, anger), lid tightening or widening (AU7/AU5), lip-corner pull or depression
(AU12/AU15, smile and frown); a talking head also needs blinks (15-26 a minute, never periodic:
§4.1) and a little head movement, or it looks like a photograph. Each control is a smooth
displacement field precomputed once per avatar; the expression-warped face is one ``cv2.remap``
of the head region, redrawn only when a displacement changed by ``REDRAW_PX`` (measured cost:
bench/RESULTS.md, "Voices"). Mouth corners are displaced after the viseme
warp, so lip-sync is untouched (TalkingHead's "face-safe" channels).

Blinks are scheduled from a seeded generator: intervals drawn around the emotion's rate with
jitter (log-normal, at least 0.6 s apart), a 5-frame close/hold/open profile; the head sways on
two incommensurate sines with random phases. Parameters ease towards a new emotion over ~0.3 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lipsync.faces import Box

#: Landmarks as fractions of the (padded) face box: brows, eyes, mouth corners.
BROW_Y, BROW_X = 0.22, 0.29
EYE_Y, EYE_X = 0.29, 0.30
#: Mouth corners: outside the lip warp's half width, a little above its lip line.
CORNER_SPREAD, CORNER_RISE = 1.2, 0.05
#: Largest displacements, as fractions of the face box height.
BROW_MAX, CORNER_MAX, LID_MAX, SWAY_MAX = 0.05, 0.035, 0.04, 0.012
BLINK_PROFILE = (0.55, 1.0, 1.0, 0.6, 0.25)
#: an eye's half width and half height, as fractions of the face box
EYE_A, EYE_B = 0.085, 0.035
#: the expression-warped face is redrawn when a displacement changed by more than this (pixels)
REDRAW_PX = 0.5


@dataclass(frozen=True, slots=True)
class Expression:
    """Controls in [-1, 1] (0: the portrait as it is); ``blinks_per_min`` and ``sway`` scale motion."""

    brow_raise: float = 0.0  # AU1+AU2: both ends up
    brow_inner: float = 0.0  # AU1: inner ends up (sad, worried)
    brow_lower: float = 0.0  # AU4: lowered and drawn together (angry)
    lid: float = 0.0  # > 0: upper lids lower (AU7 squint, sad); < 0: widened (AU5, surprise)
    corner: float = 0.0  # > 0: smile (AU12); < 0: frown (AU15)
    sway: float = 1.0
    blinks_per_min: float = 17.0


EXPRESSIONS: dict[str, Expression] = {
    "neutral": Expression(),
    "happy": Expression(brow_raise=0.25, lid=0.2, corner=1.0, sway=1.2, blinks_per_min=20),
    "sad": Expression(brow_inner=0.9, brow_lower=0.15, lid=0.45, corner=-0.8, sway=0.6, blinks_per_min=14),
    "angry": Expression(brow_lower=1.0, lid=0.3, corner=-0.45, sway=0.8, blinks_per_min=22),
    "surprised": Expression(brow_raise=1.0, lid=-0.6, corner=0.1, sway=1.0, blinks_per_min=10),
    "gentle": Expression(brow_inner=0.35, lid=0.2, corner=0.5, sway=0.8, blinks_per_min=15),
}
_CONTROLS = ("brow_raise", "brow_inner", "brow_lower", "lid", "corner", "sway")


def _blob(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((xs[None, :] - cx) / sx) ** 2) - (((ys[:, None] - cy) / sy) ** 2)).astype(np.float32)


def _darkest(roi: np.ndarray, x: float, y: float, rx: float, ry: float) -> tuple[float, float]:
    """The darkest spot (an iris) near (x, y): eyes of a turned or off-centre face are not where
    the box's fractions put them."""
    x0, x1 = max(0, int(x - rx)), min(roi.shape[1], int(x + rx) + 1)
    y0, y1 = max(0, int(y - ry)), min(roi.shape[0], int(y + ry) + 1)
    gray = cv2.GaussianBlur(cv2.cvtColor(roi[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY), (0, 0), max(1.0, rx / 8))
    iy, ix = np.unravel_index(int(np.argmin(gray)), gray.shape)
    return float(x0 + ix), float(y0 + iy)


class FaceAnimator:
    """Precomputed displacement fields over the head region of one avatar."""

    def __init__(self, box: Box, image: np.ndarray, mouth_x: float, mouth_y: float, half_w: float) -> None:
        h_img, w_img = image.shape[:2]
        bw, bh = box.width, box.height
        self.x1, self.x2 = int(max(0, box.x1 - 0.08 * bw)), int(min(w_img, box.x2 + 0.08 * bw))
        self.y1, self.y2 = int(max(0, box.y1 - 0.08 * bh)), int(min(h_img, box.y2 + 0.08 * bh))
        xs = np.arange(self.x1, self.x2, dtype=np.float32)
        ys = np.arange(self.y1, self.y2, dtype=np.float32)
        gx, gy = np.meshgrid(xs - self.x1, ys - self.y1)
        self.grid_x, self.grid_y = gx.astype(np.float32), gy.astype(np.float32)
        x0, y0 = float(box.x1), float(box.y1)
        self.bh = bh
        fy = lambda f: y0 + f * bh  # noqa: E731
        fx = lambda f: x0 + f * bw  # noqa: E731
        sx, sy = 0.11 * bw, 0.055 * bh
        brows = _blob(xs, ys, fx(BROW_X), fy(BROW_Y), sx, sy) + _blob(
            xs, ys, fx(1 - BROW_X), fy(BROW_Y), sx, sy
        )
        inner = _blob(xs, ys, fx(0.40), fy(BROW_Y + 0.01), 0.06 * bw, sy) + _blob(
            xs, ys, fx(0.60), fy(BROW_Y + 0.01), 0.06 * bw, sy
        )
        # Brows drawn together: the left brow moves right, the right one left.
        side = np.sign(xs - fx(0.5))[None, :].astype(np.float32)
        eyes = _blob(xs, ys, fx(EYE_X), fy(EYE_Y - 0.01), 0.075 * bw, 0.03 * bh) + _blob(
            xs, ys, fx(1 - EYE_X), fy(EYE_Y - 0.01), 0.075 * bw, 0.03 * bh
        )
        cs = 0.05 * bw
        cy = mouth_y - CORNER_RISE * bh
        corners = _blob(xs, ys, mouth_x - CORNER_SPREAD * half_w, cy, cs, 0.035 * bh) + _blob(
            xs, ys, mouth_x + CORNER_SPREAD * half_w, cy, cs, 0.035 * bh
        )
        self.brow_field = brows * BROW_MAX * bh
        self.inner_field = inner * BROW_MAX * bh
        self.inward_field = brows * side * 0.012 * bw
        self.lid_field = eyes * LID_MAX * bh
        self.corner_field = corners * CORNER_MAX * bh
        # Sway moves the head as a whole, fading to nothing at the region's border.
        wx = np.clip(np.minimum(xs - self.x1, self.x2 - 1 - xs) / (0.1 * bw), 0, 1)
        wy = np.clip(np.minimum(ys - self.y1, self.y2 - 1 - ys) / (0.1 * bh), 0, 1)
        self.sway_weight = np.outer(wy, wx).astype(np.float32)
        self.sway_px = SWAY_MAX * bh
        self.cx, self.cy = float(np.mean(xs)) - self.x1, float(box.y2) - self.y1  # rotate about the chin
        self._base: np.ndarray | None = None
        self._base_image: np.ndarray | None = None
        self._state: tuple[float, ...] = (0.0,) * 9
        w = self.sway_weight
        # map_x = stack · (1, brow_lower, sway_x px, -angle); map_y = stack · (1, raise-lower, inner,
        # -lid, corner, sway_y px, angle): rotation about (cx, cy) weighted like the translation.
        self.x_stack = np.stack([self.grid_x, self.inward_field, w, (self.grid_y - self.cy) * w]).reshape(
            4, -1
        )
        self.y_stack = np.stack(
            [self.grid_y, self.brow_field, self.inner_field, self.lid_field, self.corner_field, w,
             (self.grid_x - self.cx) * w]
        ).reshape(7, -1)  # fmt: skip
        roi = image[self.y1 : self.y2, self.x1 : self.x2]
        eyes_at = [
            _darkest(roi, fx(x) - self.x1, fy(EYE_Y) - self.y1, 0.12 * bw, 0.05 * bh)
            for x in (EYE_X, 1 - EYE_X)
        ]
        self.lids = [self._closed_eye(roi, ex, ey, EYE_A * bw, EYE_B * bh) for ex, ey in eyes_at]

    @staticmethod
    def _closed_eye(roi: np.ndarray, ex: float, ey: float, a: float, b: float) -> Any:
        """A closed eye for a blink: skin interpolated from above to below the eye, a lash line at
        its lower edge, and the soft elliptic mask it is blended with."""
        y0, y1 = max(0, int(ey - 1.6 * b)), min(roi.shape[0], int(ey + 1.6 * b) + 1)
        x0, x1 = max(0, int(ex - 1.2 * a)), min(roi.shape[1], int(ex + 1.2 * a) + 1)
        top, bottom = roi[y0, x0:x1].astype(np.float32), roi[y1 - 1, x0:x1].astype(np.float32)
        t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
        closed = top[None] * (1 - t) + bottom[None] * t
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        lash = np.exp(-(((ys - (ey + 0.45 * b) - 0.25 * b * ((xs - ex) / a) ** 2) / (0.22 * b)) ** 2))
        lash *= np.clip(1 - ((xs - ex) / (1.05 * a)) ** 2, 0, 1)
        closed *= 1 - 0.55 * lash[:, :, None]
        alpha = np.clip(1.15 - ((xs - ex) / a) ** 2 - ((ys - ey) / (1.25 * b)) ** 2, 0, 1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.6, 0.25 * b))[:, :, None]
        return (y0, y1, x0, x1), closed, alpha

    def base(
        self, image: np.ndarray, c: dict[str, float], blink: float, sway: tuple[float, float, float]
    ) -> np.ndarray:
        """The portrait with this expression, blink and sway, for the mouth to be animated on.

        Re-warped only when some displacement changed by more than ``REDRAW_PX`` pixels since the
        last one (the sway moves about 0.05 px a frame), so most frames reuse it; a redraw rewrites
        only the head region of a buffer kept for the avatar.
        """
        bh, sway_px = self.bh, self.sway_px
        state = (
            c["brow_raise"] * bh * BROW_MAX, c["brow_inner"] * bh * BROW_MAX, c["brow_lower"] * bh * BROW_MAX,
            c["lid"] * bh * LID_MAX, c["corner"] * bh * CORNER_MAX, blink * bh * EYE_B * 2,
            sway[0] * sway_px, sway[1] * sway_px, sway[2] * bh,
        )  # fmt: skip
        last = self._state
        if (
            self._base is None
            or self._base_image is not image
            or any(abs(a - b) > REDRAW_PX for a, b in zip(state, last, strict=True))
        ):
            if self._base is None or self._base_image is not image:
                self._base, self._base_image = image.copy(), image
            self.apply(self._base, c, blink, sway, source=image)  # only the head region is rewritten
            self._state = state
        return self._base

    def apply(
        self,
        frame: np.ndarray,
        c: dict[str, float],
        blink: float,
        sway: tuple[float, float, float],
        source: np.ndarray | None = None,
    ) -> None:
        """Warp the head region of ``source`` (default: ``frame`` itself) into ``frame``, in place.

        The maps are one matrix-vector product each over the stacked fields (BLAS, one pass over
        the region) instead of a dozen array expressions: that is what keeps expressions cheap.
        """
        sx, sy, angle = sway
        lower = c["brow_lower"]
        kx = np.array([1.0, lower, -sx * self.sway_px, -angle], np.float32)
        ky = np.array(
            [
                1.0,
                c["brow_raise"] - lower,
                c["brow_inner"],
                -c["lid"],
                c["corner"],
                -sy * self.sway_px,
                angle,
            ],
            np.float32,
        )
        map_x = (kx @ self.x_stack).reshape(self.grid_x.shape)
        map_y = (ky @ self.y_stack).reshape(self.grid_y.shape)
        roi = (frame if source is None else source)[self.y1 : self.y2, self.x1 : self.x2]
        out = cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if blink > 0:  # closed lids fade in over the eyes
            for (y0, y1, x0, x1), closed, alpha in self.lids:
                part = out[y0:y1, x0:x1].astype(np.float32)
                out[y0:y1, x0:x1] = (part + (closed - part) * (alpha * blink)).astype(np.uint8)
        frame[self.y1 : self.y2, self.x1 : self.x2] = out


@dataclass
class ExpressionState:
    """Expression over one video: the current emotion, eased controls, blink and sway clocks.

    One per video (``VideoBuilder``), so blinks and sway run on across sentence segments.
    """

    emotion: str = "neutral"
    fps: float = 25.0
    seed: int = 0
    enabled: bool = True
    frame_index: int = 0
    current: dict[str, float] = field(
        default_factory=lambda: {k: getattr(EXPRESSIONS["neutral"], k) for k in _CONTROLS}
    )
    _rng: np.random.Generator = field(init=False)
    _next_blink: int = field(init=False)
    _phases: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._phases = tuple(float(p) for p in self._rng.uniform(0, 2 * math.pi, 3))  # type: ignore[assignment]
        self._next_blink = self._blink_gap()

    @property
    def target(self) -> Expression:
        return EXPRESSIONS.get(self.emotion, EXPRESSIONS["neutral"])

    def _blink_gap(self) -> int:
        mean_s = 60.0 / max(1.0, self.target.blinks_per_min)
        gap_s = max(0.6, float(self._rng.lognormal(math.log(mean_s) - 0.08, 0.4)))
        return self.frame_index + max(1, round(gap_s * self.fps))

    def step(self) -> tuple[dict[str, float], float, tuple[float, float, float]]:
        """Controls, blink closure (0..1) and sway (dx, dy, angle) for the next frame."""
        target = self.target
        for name in _CONTROLS:
            self.current[name] += 0.15 * (getattr(target, name) - self.current[name])
        i = self.frame_index
        since = i - self._next_blink
        blink = BLINK_PROFILE[since] if 0 <= since < len(BLINK_PROFILE) else 0.0
        if since >= len(BLINK_PROFILE):
            self._next_blink = self._blink_gap()
        t = i / self.fps
        a, b, c = self._phases
        amp = self.current["sway"]
        sway = (
            amp * 0.6 * math.sin(2 * math.pi * 0.23 * t + a),
            amp * 0.35 * math.sin(2 * math.pi * 0.31 * t + b),
            amp * 0.012 * math.sin(2 * math.pi * 0.17 * t + c),  # radians
        )
        self.frame_index += 1
        return self.current, blink, sway
