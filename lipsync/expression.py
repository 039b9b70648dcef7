"""Facial expression for the procedural renderer: brows, eyelids with blinking, mouth corners, head sway.

Why these controls: the facial action units that tell the basic emotions apart on a 2D face are
few (reference voice-emotion.md §4.3): inner/outer brow raise (AU1/AU2, sadness and surprise),
brow lowering (AU4, anger), lid tightening or widening (AU7/AU5), lip-corner pull or depression
(AU12/AU15, smile and frown); a talking head also needs blinks (15-26 a minute, never periodic:
§4.1) and a little head movement, or it looks like a photograph. Each control is a smooth
displacement field precomputed once per avatar; a drawn head is one ``cv2.remap`` of the head
region, drawn only when the expression moved by ``REDRAW_PX`` or the sway reached another pose,
and kept for when the head comes back to that pose (``FaceAnimator``; cost: ``python -m
bench.voices``). The mouth is animated on the drawn face, so lip-sync is untouched
(TalkingHead's "face-safe" channels).

Blinks are scheduled from a seeded generator: intervals drawn around the emotion's rate with
jitter (log-normal, at least 0.6 s apart), a 5-frame close/hold/open profile; the head sways on
two incommensurate sines with random phases. Parameters ease towards a new emotion over ~0.3 s.
"""

from __future__ import annotations

import math
from collections import OrderedDict
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
#: the expression is drawn only where its largest displacement is above this (pixels)
NEGLIGIBLE_PX = 0.02
#: memory per avatar for swayed heads (a 512 px portrait's head: ~40 KB) and the sway's maps (~80 KB a pose)
HEAD_CACHE_BYTES = 16 * 1024 * 1024
MAPS_CACHE_BYTES = 8 * 1024 * 1024


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
NEUTRAL = "neutral"
_TARGETS = {name: tuple(float(getattr(e, k)) for k in _CONTROLS) for name, e in EXPRESSIONS.items()}


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
    """Precomputed displacement fields over the head region of one avatar, and the heads drawn.

    A head is one remap of the portrait's head region: the sway (a shift and a rotation about the
    chin that fade to nothing at the region's border) plus the expression's displacement, which is
    non-zero only in two small rectangles (brows and eyes, mouth corners). The sway is a pixel or
    two each way and is drawn at poses ``REDRAW_PX`` apart, so each pose's maps are built once and
    a settled emotion has a few dozen heads, kept and pasted when the head comes back (both LRU,
    bounded in bytes); the expression is redrawn only when a control moved by ``REDRAW_PX``.
    Blinks are blended onto the drawn head (two small patches). bench/voices.py measures the cost.
    """

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
        roi = image[self.y1 : self.y2, self.x1 : self.x2]
        eyes_at = [
            _darkest(roi, fx(x) - self.x1, fy(EYE_Y) - self.y1, 0.12 * bw, 0.05 * bh)
            for x in (EYE_X, 1 - EYE_X)
        ]
        self.lids = [self._closed_eye(roi, ex, ey, EYE_A * bw, EYE_B * bh) for ex, ey in eyes_at]
        #: a control's largest displacement per unit (pixels): the expression's redraw test
        self.control_px = max(BROW_MAX, LID_MAX, CORNER_MAX) * bh
        self.parts = self._expression_parts()
        self.region = (slice(self.y1, self.y2), slice(self.x1, self.x2))
        # sway maps: map_x = (x, w, (y - cy) w) · (1, -dx, -angle), map_y = (y, w, (x - cx) w) · (1, -dy, angle)
        w = self.sway_weight
        self.sway_x = np.stack([self.grid_x + self.x1, w, (self.grid_y - self.cy) * w]).reshape(3, -1)
        self.sway_y = np.stack([self.grid_y + self.y1, w, (self.grid_x - self.cx) * w]).reshape(3, -1)
        self._image: np.ndarray | None = None
        self._base = image
        self._controls: tuple[float, ...] | None = None
        self._offsets: list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]] = []
        self._pose: tuple[int, int, int] | None = None
        self._head: np.ndarray | None = None  # the head in the buffer, without lids
        self._closed = 0.0  # the lids drawn on it
        #: heads by (controls, pose), and each pose's sway maps (LRU, bounded bytes)
        self._heads: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._maps: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        pixels = max(1, (self.y2 - self.y1) * (self.x2 - self.x1))
        self._max_heads = max(8, HEAD_CACHE_BYTES // (pixels * image.shape[2]))
        self._max_maps = max(8, MAPS_CACHE_BYTES // (pixels * 8))  # two float32 maps

    def _expression_parts(self) -> list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]:
        """(rectangle, x fields, y fields) where the expression moves pixels: brows and eyes, and the
        mouth corners; its displacement there = fields · coefficients (zero elsewhere)."""
        moving = np.abs(self.brow_field) + self.inner_field + np.abs(self.inward_field) + self.lid_field
        upper = moving > NEGLIGIBLE_PX
        rects = [r for r in (_bounds(upper), _bounds(self.corner_field > NEGLIGIBLE_PX)) if r is not None]
        if len(rects) == 2 and rects[0][1] > rects[1][0] and rects[1][1] > rects[0][0]:
            rects = [_union(*rects)]  # overlapping (a very short face): one rectangle
        parts = []
        for r0, r1, c0, c1 in rects:
            cut = (slice(r0, r1), slice(c0, c1))
            xs = self.inward_field[cut].reshape(1, -1)
            ys = np.stack(
                [self.brow_field[cut], self.inner_field[cut], self.lid_field[cut], self.corner_field[cut]]
            ).reshape(4, -1)
            parts.append(((r0, r1, c0, c1), np.ascontiguousarray(xs), np.ascontiguousarray(ys)))
        return parts

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

        Layers are redrawn only when they moved: the expression when a control's displacement
        changed by more than ``REDRAW_PX`` pixels, the sway (about 0.1 px a frame) when it reached
        another pose, the lids when the blink changed; most frames return the buffer unchanged.
        """
        if self._image is not image:  # a new portrait: a fresh buffer, everything redrawn
            self._image, self._base, self._controls, self._pose = image, image.copy(), None, None
            self._heads.clear()
        controls = (c["brow_raise"], c["brow_inner"], c["brow_lower"], c["lid"], c["corner"])
        last = self._controls
        moved = last is None
        if not moved and controls != last:  # easing: redrawn once it moved by REDRAW_PX
            moved = max(abs(a - b) for a, b in zip(controls, last, strict=True)) * self.control_px > REDRAW_PX
        if moved:
            self._offsets = self._displacement(c)
            self._controls = controls
        # The sway is drawn at poses on a REDRAW_PX lattice (shift, and rotation as the shift it
        # makes one face height from the chin): a few dozen poses, which the head revisits.
        k = self.sway_px / REDRAW_PX
        pose = (round(sway[0] * k), round(sway[1] * k), round(sway[2] * self.bh / REDRAW_PX))
        region = self.region
        if moved or pose != self._pose:
            key = (self._controls, pose)
            head = self._heads.get(key)
            if head is None:
                head = self._heads[key] = self._draw(image, pose)
                if len(self._heads) > self._max_heads:
                    self._heads.popitem(last=False)
            else:
                self._heads.move_to_end(key)
            self._base[region] = head
            self._head, self._pose, self._closed = head, pose, 0.0
        if blink != self._closed:  # lids on the drawn head: a blink costs two small blends
            if self._closed:
                self._base[region] = self._head
            if blink > 0:
                self._close_lids(self._base, blink, pose)
            self._closed = blink
        return self._base

    def _displacement(
        self, c: dict[str, float]
    ) -> list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]:
        """The expression's displacement (x, y pixels) in each of its rectangles."""
        lower = c["brow_lower"]
        ky = np.array([c["brow_raise"] - lower, c["brow_inner"], -c["lid"], c["corner"]], np.float32)
        out = []
        for (r0, r1, c0, c1), xs, ys in self.parts:
            shape = (r1 - r0, c1 - c0)
            out.append(
                ((r0, r1, c0, c1), (xs[0] * np.float32(lower)).reshape(shape), (ky @ ys).reshape(shape))
            )
        return out

    def _draw(self, image: np.ndarray, pose: tuple[int, int, int]) -> np.ndarray:
        """The head region with the expression and the sway ``pose`` (lattice steps: shift x,
        shift y, rotation about the chin), fading to the still portrait at its border: one remap
        of the portrait through the pose's maps plus the expression's displacement."""
        maps = self._maps.get(pose)
        if maps is None:
            step = REDRAW_PX
            dx, dy, angle = pose[0] * step, pose[1] * step, pose[2] * step / self.bh
            shape = self.grid_x.shape
            maps = self._maps[pose] = (
                (np.array([1.0, -dx, -angle], np.float32) @ self.sway_x).reshape(shape),
                (np.array([1.0, -dy, angle], np.float32) @ self.sway_y).reshape(shape),
            )
            if len(self._maps) > self._max_maps:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(pose)
        map_x, map_y = maps[0].copy(), maps[1].copy()
        for (r0, r1, c0, c1), ox, oy in self._offsets:
            map_x[r0:r1, c0:c1] += ox
            map_y[r0:r1, c0:c1] += oy
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _close_lids(self, out: np.ndarray, blink: float, pose: tuple[int, int, int]) -> None:
        """Closed lids faded in over the eyes, where the sway ``pose`` moved them (to the nearest
        pixel: the lid's soft edge hides the rest)."""
        dx, dy, angle = pose[0] * REDRAW_PX, pose[1] * REDRAW_PX, pose[2] * REDRAW_PX / self.bh
        for (y0, y1, x0, x1), closed, alpha in self.lids:
            ex, ey = (x0 + x1) / 2, (y0 + y1) / 2
            top = self.y1 + y0 + round(dy - angle * (ex - self.cx))
            left = self.x1 + x0 + round(dx + angle * (ey - self.cy))
            if top < 0 or left < 0 or top + y1 - y0 > out.shape[0] or left + x1 - x0 > out.shape[1]:
                continue
            view = out[top : top + y1 - y0, left : left + x1 - x0]
            part = view.astype(np.float32)
            view[:] = (part + (closed - part) * (alpha * blink)).astype(np.uint8)


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


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
    _settled: str | None = field(default=None, init=False)  # the emotion the controls reached
    _rng: np.random.Generator = field(init=False)
    _next_blink: int = field(init=False)
    _phases: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._phases = tuple(float(p) for p in self._rng.uniform(0, 2 * math.pi, 3))  # type: ignore[assignment]
        self._next_blink = self._blink_gap()

    @property
    def target(self) -> Expression:
        return EXPRESSIONS.get(self.emotion, EXPRESSIONS[NEUTRAL])

    def _blink_gap(self) -> int:
        mean_s = 60.0 / max(1.0, self.target.blinks_per_min)
        gap_s = max(0.6, float(self._rng.lognormal(math.log(mean_s) - 0.08, 0.4)))
        return self.frame_index + max(1, round(gap_s * self.fps))

    def ease(self) -> dict[str, float]:
        """The controls one frame closer to the emotion's (the live face's own clocks do the rest);
        once there, nothing to compute until the emotion changes."""
        if self._settled == self.emotion:
            return self.current
        current, settled = self.current, True
        for name, goal in zip(_CONTROLS, _TARGETS.get(self.emotion, _TARGETS[NEUTRAL]), strict=True):
            gap = goal - current[name]
            if abs(gap) > 1e-3:
                current[name] += 0.15 * gap
                settled = False
            else:
                current[name] = goal
        self._settled = self.emotion if settled else None
        return current

    def step(self) -> tuple[dict[str, float], float, tuple[float, float, float]]:
        """Controls, blink closure (0..1) and sway (dx, dy, angle) for the next frame."""
        self.ease()
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
