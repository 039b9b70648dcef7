"""Frames for a live call: the mouth follows the audio being sent, the face idles in between.

``/v1/talk`` renders a whole answer at once (``procedural.mouth_track`` looks ahead and
behind); a live call only ever has the audio of the frame it is drawing, so this module keeps
the same level mapping as a streaming filter (fast attack, slower release) whose state carries
from frame to frame, and the mouth closes smoothly when the audio stops: no jump when speech
starts or ends. Between answers the face is never a frozen picture: it blinks at a human rate
(every 2-6 s, now and then twice), breathes (a slow rise and swell) and sways slightly; when it
speaks it also nods a little with the loudness, and shows the emotion of the answer being spoken
(``set_emotion``: the brows, lids and mouth corners of lipsync/expression.py, as in /v1/talk). All
of it is small OpenCV remaps of a few regions plus one affine warp of the frame, a few
milliseconds per frame on one core.

``frame`` is synchronous and CPU-bound: the WebRTC video track runs it in a worker thread
(OpenCV releases the GIL), never on the event loop.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from lipsync.expression import EXPRESSIONS, ExpressionState, FaceAnimator
from lipsync.faces import Box
from lipsync.procedural import FLOOR_DB, RANGE_DB, MouthAnimator

#: Eye centres and half-sizes as fractions of the (S3FD-like) face box, when the eye detector
#: does not find both eyes.
EYE_Y = 0.31
EYE_XS = (0.28, 0.76)
EYE_HALF_W, EYE_HALF_H = 0.12, 0.045
#: Seconds between blinks (uniform), the chance of a quick second blink, and blink timing.
BLINK_GAP_S = (2.0, 6.0)
DOUBLE_BLINK = 0.15
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.04, 0.12
#: Breathing period and idle sway (pixels and degrees at a 480 px frame; scaled with the size).
BREATH_S = 4.2
SWAY_PX, SWAY_DEG = 1.4, 0.5
#: The expression's controls drawn here: this face blinks and sways on its own clocks.
FACE_CONTROLS = ("brow_raise", "brow_inner", "brow_lower", "lid", "corner")
_NO_SWAY = (0.0, 0.0, 0.0)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even (width, height) no larger than ``max_side``, keeping the aspect ratio."""
    scale = min(1.0, max_side / max(width, height))
    w, h = max(2, round(width * scale)), max(2, round(height * scale))
    return w - w % 2, h - h % 2


def find_eyes(image: np.ndarray, box: Box) -> list[tuple[float, float, float]]:
    """(centre x, centre y, half width) of both eyes: OpenCV's Haar eye detector in the upper
    face, once per call; face-box proportions when it does not find exactly a left and a right eye."""
    bw, bh = box.width, box.height
    top = cv2.cvtColor(image[box.y1 : box.y1 + int(0.6 * bh), box.x1 : box.x2], cv2.COLOR_BGR2GRAY)
    found: list[tuple[float, float, float]] = []
    if top.size:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
        side = max(6, int(0.12 * bw))
        for x, y, w, h in cascade.detectMultiScale(top, 1.1, 3, minSize=(side, side)):
            if 0.12 * bw <= w <= 0.5 * bw and 0.15 * bh <= y + h / 2 <= 0.55 * bh:
                found.append((box.x1 + x + w / 2, box.y1 + y + h / 2, 0.36 * w))
    left = [e for e in found if e[0] < box.x1 + 0.5 * bw]
    right = [e for e in found if e[0] >= box.x1 + 0.5 * bw]
    if left and right:
        return [max(left, key=lambda e: e[2]), max(right, key=lambda e: e[2])]
    return [(box.x1 + fx * bw, box.y1 + EYE_Y * bh, EYE_HALF_W * bw) for fx in EYE_XS]


class EyeLids:
    """Closes both eyes by a fraction: a lid of the eye's own skin tones slides down.

    The closed lid is built once per eye from the skin just above and below the eye
    (interpolated row by row, lightly blurred) with a darker lash line; a blink blends it in
    under a soft elliptical mask whose lower edge follows the closing lid."""

    def __init__(self, image: np.ndarray, box: Box) -> None:
        h_img, w_img = image.shape[:2]
        self.regions: list[tuple[int, int, np.ndarray, np.ndarray, float, float]] = []
        for cx, cy, hw in find_eyes(image, box):
            hh = EYE_HALF_H / EYE_HALF_W * hw
            x1, x2 = int(max(0, cx - 1.5 * hw)), int(min(w_img, cx + 1.5 * hw))
            y1, y2 = int(max(0, cy - 1.9 * hh)), int(min(h_img, cy + 1.9 * hh))
            if x2 - x1 < 6 or y2 - y1 < 6:
                continue
            roi = image[y1:y2, x1:x2].astype(np.float32)
            h, w = roi.shape[:2]
            band = max(1, round(0.35 * hh))
            above, below = roi[:band].mean(axis=0), roi[-band:].mean(axis=0)
            mix = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
            lid = cv2.GaussianBlur(above[None] * (1 - mix) + below[None] * mix, (0, 0), max(0.8, 0.15 * hh))
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            ellipse = np.clip(
                1.0 - ((xs - (cx - x1)) / (1.25 * hw)) ** 2 - ((ys - (cy - y1)) / (1.45 * hh)) ** 2, 0, 1
            )
            mask = np.clip(ellipse * 3.0, 0.0, 1.0)
            self.regions.append((x1, y1, lid, mask, cy - y1, hh))

    def apply(self, frame: np.ndarray, closure: float) -> None:
        """Draws lids ``closure`` (0 open .. 1 shut) of the way down, in place."""
        for x1, y1, lid, mask, cy, hh in self.regions:
            h, w = mask.shape
            ys = np.arange(h, dtype=np.float32)[:, None]
            edge = cy - 1.2 * hh + closure * 1.6 * hh  # the lid's lower edge, moving down
            cover = 1.0 / (1.0 + np.exp((ys - edge - closure * 0.9 * hh) / max(0.6, 0.25 * hh)))
            a = (mask * cover)[:, :, None]
            lash = 1.0 - 0.45 * closure * np.exp(-(((ys - edge) / max(0.8, 0.22 * hh)) ** 2))[:, :, None]
            roi = frame[y1 : y1 + h, x1 : x1 + w].astype(np.float32)
            out = roi * (1.0 - a) + lid * lash * a
            frame[y1 : y1 + h, x1 : x1 + w] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


class LiveFace:
    """One call's avatar: ``frame(audio, t)`` → a BGR frame of ``size`` for media time ``t``."""

    def __init__(
        self, image: np.ndarray, box: Box, *, fps: float, max_side: int, seed: int | None = None
    ) -> None:
        h0, w0 = image.shape[:2]
        w, h = fit_size(w0, h0, max_side)
        sx, sy = w / w0, h / h0
        self.image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != (w0, h0) else image
        self.box = Box(round(box.x1 * sx), round(box.y1 * sy), round(box.x2 * sx), round(box.y2 * sy))
        self.size = (w, h)
        self.fps = fps
        self.mouth = MouthAnimator(self.image, self.box)
        self.lids = EyeLids(self.image, self.box)
        self.rng = random.Random(seed)
        self.opening, self.width = 0.0, 1.0
        self.loudness = 0.0  # slow envelope of the speech level, drives the nod
        self.blinks: list[float] = []  # start times of scheduled blinks
        self.next_blink = self.rng.uniform(0.5, 2.5)
        self.phases = [self.rng.uniform(0, 2 * math.pi) for _ in range(4)]
        self.centre = ((self.box.x1 + self.box.x2) / 2, (self.box.y1 + self.box.y2) / 2)
        self.motion_scale = max(w, h) / 480.0
        self.last_closure = 0.0
        #: the emotion of what is being said: the /v1/talk renderer's expressions (lipsync/expression.py)
        self.expression = ExpressionState(fps=fps, seed=seed or 0)
        self._features: FaceAnimator | None = None  # built at the first emotion

    @property
    def emotion(self) -> str:
        return self.expression.emotion

    def set_emotion(self, emotion: str | None) -> None:
        """Show ``emotion`` (one of gateway/conversation/emotion.py's; None or unknown: neutral).
        It eases in and out over ~0.3 s; safe to call from another thread than ``frame``'s."""
        self.expression.emotion = emotion if emotion in EXPRESSIONS else "neutral"

    # ------------------------------------------------------------------ state per frame

    def _mouth(self, audio: np.ndarray | None, rate: int) -> None:
        target, spread = 0.0, 0.5
        if audio is not None and audio.size:
            rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)) + 1e-12))
            level_db = 20.0 * math.log10(rms + 1e-9)
            target = min(1.0, max(0.0, (level_db - FLOOR_DB) / RANGE_DB))
            if target > 0.05:
                spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
                freqs = np.fft.rfftfreq(audio.size, 1.0 / rate)
                low = spectrum[(freqs >= 100) & (freqs < 1000)].sum()
                high = spectrum[(freqs >= 2000) & (freqs < min(6000, rate / 2))].sum()
                spread = min(1.0, max(0.0, (math.log10((high + 1e-12) / (low + 1e-12)) + 3.0) / 4.0))
                target *= 1.0 - 0.7 * min(0.5, max(0.0, spread - 0.5))
        attack = 0.7 if target > self.opening else 0.45
        self.opening += attack * (target - self.opening)
        goal_w = 0.88 + 0.30 * spread if target > 0.05 else 1.0
        self.width += 0.5 * (goal_w - self.width)
        self.loudness += 0.12 * (self.opening - self.loudness)

    def _closure(self, t: float) -> float:
        """Eyelid closure at time ``t`` (schedules the next blinks as time passes)."""
        while t >= self.next_blink:
            self.blinks.append(self.next_blink)
            if self.rng.random() < DOUBLE_BLINK:
                self.blinks.append(self.next_blink + self.rng.uniform(0.28, 0.4))
            self.next_blink += self.rng.uniform(*BLINK_GAP_S)
        closure = 0.0
        for start in self.blinks:
            dt = t - start
            if dt < 0:
                continue  # the second blink of a double blink, still to come
            if dt < BLINK_CLOSE_S:
                closure = max(closure, dt / BLINK_CLOSE_S)
            elif dt < BLINK_CLOSE_S + BLINK_HOLD_S:
                closure = 1.0
            elif dt < BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S:
                closure = max(closure, 1.0 - (dt - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S)
        self.blinks = [s for s in self.blinks if t - s < 1.0]
        return closure

    def _pose(self, t: float) -> np.ndarray:
        """The small affine motion of the whole frame: breathing, idle sway, a nod when loud."""
        p = self.phases
        k = self.motion_scale
        breath = math.sin(2 * math.pi * t / BREATH_S + p[0])
        dx = (
            k
            * SWAY_PX
            * (0.6 * math.sin(2 * math.pi * 0.11 * t + p[1]) + 0.4 * math.sin(2 * math.pi * 0.23 * t + p[2]))
        )
        dy = k * (0.8 * breath + 1.6 * self.loudness * math.sin(2 * math.pi * 1.7 * t + p[3]))
        angle = SWAY_DEG * math.sin(2 * math.pi * 0.07 * t + p[2]) + 0.6 * self.loudness * math.sin(
            2 * math.pi * 0.9 * t
        )
        scale = 1.0 + 0.003 * breath
        m = cv2.getRotationMatrix2D(self.centre, angle, scale)
        m[0, 2] += dx
        m[1, 2] += dy
        return m

    def _expressed(self) -> np.ndarray | None:
        """The portrait with the current expression (brows, lids, mouth corners), or None at rest."""
        controls = self.expression.ease()
        if all(abs(controls[k]) < 0.01 for k in FACE_CONTROLS):
            return None  # neutral: the portrait itself, no warp at all
        if self._features is None:
            m = self.mouth
            self._features = FaceAnimator(self.box, self.image, m.mx, m.my, m.half_w)
        return self._features.base(self.image, controls, 0.0, _NO_SWAY)

    # ------------------------------------------------------------------ the frame

    def frame(self, audio: np.ndarray | None, rate: int, t: float) -> np.ndarray:
        """The frame shown at media time ``t`` while ``audio`` (float mono, this frame's span) plays."""
        self._mouth(audio, rate)
        base = self._expressed()  # the mouth is animated on the expressed face, as in /v1/talk
        out = self.mouth.compose(self.mouth.mouth_region(self.opening, self.width, base), base)
        closure = self._closure(t)
        self.last_closure = closure
        if closure > 0.01:
            self.lids.apply(out, closure)
        return cv2.warpAffine(
            out, self._pose(t), self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
