"""A weightless talking-portrait renderer: the offline default when no Wav2Lip checkpoint is set.

Per video frame it measures the speech (RMS level → mouth opening; the balance of energy
above 2 kHz against 100–1000 Hz → a coarse viseme: spread "ee/s" vs rounded "oo") and warps the lower face of
the still portrait: the jaw drops (a smooth vertical displacement field that fades back to
zero below the chin), the lips widen or round, and a soft dark mouth interior appears in
the gap. Everything is a small remap of one region, so it runs far faster than real time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import maximum_filter1d

from lipsync.expression import ExpressionState, FaceAnimator
from lipsync.faces import Box

#: Mouth geometry as fractions of the (S3FD-like, padded) face box.
MOUTH_X, MOUTH_Y = 0.5, 0.70
MOUTH_HALF_WIDTH = 0.19
MAX_JAW_DROP = 0.085
#: Level mapping: below FLOOR_DB the mouth is closed; at FLOOR_DB + RANGE_DB fully open.
FLOOR_DB = -50.0
RANGE_DB = 36.0
#: A frame this many dB below its neighbourhood's peak is mostly closed (syllable dips).
DIP_DB = 14.0
_INTERIOR_BGR = np.array([28.0, 24.0, 62.0], dtype=np.float32)


@dataclass(slots=True)
class MouthTrack:
    """Per-frame mouth opening in [0, 1] and width factor around 1."""

    opening: np.ndarray
    width: np.ndarray
    level_db: np.ndarray


def frame_count(n_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames covering the audio (at least one)."""
    return max(1, round(n_samples * fps / sample_rate))


def mouth_track(signal: np.ndarray, sample_rate: int, fps: float, n_frames: int | None = None) -> MouthTrack:
    """Opening and width per frame from a mono float signal."""
    n = n_frames or frame_count(signal.size, sample_rate, fps)
    hop = sample_rate / fps
    win = round(1.5 * hop)
    win += win % 2
    centres = ((np.arange(n) + 0.5) * hop).astype(np.int64)
    idx = centres[:, None] + np.arange(-win // 2, win // 2)[None, :]
    padded = np.concatenate([np.zeros(win), np.asarray(signal, dtype=np.float32), np.zeros(win)])
    frames = padded[np.clip(idx + win, 0, padded.size - 1)] * np.hanning(win)[None, :]
    rms = np.sqrt(np.mean(frames**2, axis=1) / 0.375 + 1e-12)  # 0.375: Hann power gain
    level_db = 20.0 * np.log10(rms + 1e-9)
    target = np.clip((level_db - FLOOR_DB) / RANGE_DB, 0.0, 1.0)
    # Syllables: the mouth half-closes in the dips between syllable peaks, even in loud speech.
    local_peak = maximum_filter1d(level_db, size=9, mode="nearest")
    target *= np.clip(1.0 + (level_db - local_peak) / DIP_DB, 0.25, 1.0)

    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1.0 / sample_rate)
    low = spectrum[:, (freqs >= 100) & (freqs < 1000)].sum(axis=1)
    high = spectrum[:, (freqs >= 2000) & (freqs < min(6000, sample_rate / 2))].sum(axis=1)
    # log10(high/low) runs from about -5 (rounded vowels) to +2 (sibilants): map to [0, 1].
    spread = np.clip((np.log10((high + 1e-12) / (low + 1e-12)) + 3.0) / 4.0, 0.0, 1.0)
    # Sibilants and "ee" are spoken with the teeth nearly together: less jaw, wider lips.
    target *= 1.0 - 0.7 * np.clip(spread - 0.5, 0.0, 0.5)

    # Fast attack, slower release: mouths open quickly and close a little later.
    opening = np.empty(n, dtype=np.float32)
    width = np.empty(n, dtype=np.float32)
    o, w = 0.0, 1.0
    for i in range(n):
        a = 0.7 if target[i] > o else 0.45
        o += a * (target[i] - o)
        wt = 0.88 + 0.30 * spread[i] if target[i] > 0.05 else 1.0
        w += 0.5 * (wt - w)
        opening[i] = o
        width[i] = w
    return MouthTrack(opening=opening, width=width, level_db=level_db.astype(np.float32))


class MouthAnimator:
    """Precomputed warp fields for one avatar; ``frame(opening, width)`` makes one frame."""

    def __init__(self, image: np.ndarray, box: Box) -> None:
        self.image = image
        h_img, w_img = image.shape[:2]
        bw, bh = box.width, box.height
        self.mx = box.x1 + MOUTH_X * bw
        self.my = box.y1 + MOUTH_Y * bh
        self.half_w = MOUTH_HALF_WIDTH * bw
        self.max_drop = MAX_JAW_DROP * bh
        # Region of interest: from above the upper lip to well below the chin.
        self.x1 = int(max(0, self.mx - 0.45 * bw))
        self.x2 = int(min(w_img, self.mx + 0.45 * bw))
        self.y1 = int(max(0, self.my - 0.15 * bh))
        self.y2 = int(min(h_img, box.y2 + 0.25 * bh))
        xs = np.arange(self.x1, self.x2, dtype=np.float32)
        ys = np.arange(self.y1, self.y2, dtype=np.float32)
        # remap reads from the ROI, so the sampling grid is in ROI-local coordinates.
        self.grid_x, self.grid_y = np.meshgrid(xs - self.x1, ys - self.y1)
        self.mx_local = self.mx - self.x1
        chin = box.y2 - 0.02 * bh
        # Vertical profile of the jaw drop: 0 above the lip line, 1 through the chin, 0 at the ROI bottom.
        rise = np.clip((ys - (self.my - 0.01 * bh)) / (0.03 * bh), 0, 1)
        fall = np.clip((self.y2 - ys) / max(1.0, self.y2 - chin), 0, 1)
        profile_y = _smoothstep(rise) * _smoothstep(fall)
        lift = -0.22 * _smoothstep(np.clip(1 - np.abs(ys - (self.my - 0.04 * bh)) / (0.05 * bh), 0, 1))
        lift *= ys < self.my
        profile_x = _smoothstep(np.clip(1 - np.abs(xs - self.mx) / (0.42 * bw), 0, 1) * 1.6)
        self.drop_field = (np.outer(profile_y + lift, profile_x)).astype(np.float32)
        # Horizontal lip stretch acts near the lip line only.
        near = np.exp(-(((ys - self.my) / (0.07 * bh)) ** 2))[:, None]
        across = np.exp(-(((xs - self.mx) / (1.6 * self.half_w)) ** 2))[None, :]
        self.width_field = (near * across).astype(np.float32)
        self.roi = image[self.y1 : self.y2, self.x1 : self.x2]

    def mouth_region(self, opening: float, width: float, base: np.ndarray | None = None) -> np.ndarray | None:
        """The warped lower-face region, or None when the mouth is at rest.

        ``base``: the full frame to warp from instead of the portrait (an expression-warped face).
        """
        if opening < 0.01 and abs(width - 1.0) < 0.01:
            return None
        roi = self.roi if base is None else base[self.y1 : self.y2, self.x1 : self.x2]
        drop = opening * self.max_drop
        map_y = self.grid_y - drop * self.drop_field
        scale = 1.0 + (1.0 / width - 1.0) * self.width_field
        map_x = self.mx_local + (self.grid_x - self.mx_local) * scale
        warped = cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if drop >= 0.5:
            warped = self._interior(warped, opening, width, drop)
        return warped

    def compose(self, region: np.ndarray | None, base: np.ndarray | None = None) -> np.ndarray:
        """The full frame with ``region`` put back (the warp fades to zero at the region edges)."""
        out = (self.image if base is None else base).copy()
        if region is not None:
            out[self.y1 : self.y2, self.x1 : self.x2] = region
        return out

    def frame(self, opening: float, width: float) -> np.ndarray:
        return self.compose(self.mouth_region(opening, width))

    def _interior(self, roi: np.ndarray, opening: float, width: float, drop: float) -> np.ndarray:
        """A soft dark mouth opening in the gap the jaw drop made."""
        alpha = np.zeros(roi.shape[:2], dtype=np.float32)
        centre = (round(self.mx - self.x1), round(self.my - self.y1 + 0.45 * drop))
        axes = (max(1, round(self.half_w * 0.8 * width)), max(1, round(0.5 * drop)))
        cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, thickness=-1)
        sigma = max(0.8, 0.18 * axes[1] + 0.6)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)[:, :, None] * min(1.0, 0.4 + 1.2 * opening)
        mixed = roi.astype(np.float32)
        mixed += (_INTERIOR_BGR - mixed) * alpha
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class ProceduralRenderer:
    """The renderer protocol's weightless implementation."""

    name = "procedural"

    def __init__(self, fps: float = 25.0) -> None:
        self.fps = fps
        self._animators: dict[str, MouthAnimator] = {}
        self._faces: dict[str, FaceAnimator] = {}

    def face(self, avatar: object) -> FaceAnimator:
        """The avatar's expression fields (brows, lids, mouth corners, sway): lipsync/expression.py."""
        key = getattr(avatar, "id", "")
        face = self._faces.get(key)
        if face is None:
            anim = self.animator(avatar)
            face = FaceAnimator(avatar.box, anim.image, anim.mx, anim.my, anim.half_w)  # type: ignore[attr-defined]
            if len(self._faces) > 32:
                self._faces.clear()
            self._faces[key] = face
        return face

    def animator(self, avatar: object) -> MouthAnimator:
        key = getattr(avatar, "id", "")
        anim = self._animators.get(key)
        if anim is None:
            anim = MouthAnimator(avatar.image, avatar.box)  # type: ignore[attr-defined]
            if len(self._animators) > 32:
                self._animators.clear()
            self._animators[key] = anim
        return anim

    def render(
        self,
        avatar: object,
        pcm16k: np.ndarray,
        n_frames: int | None = None,
        timings: dict[str, float] | None = None,
        expression: ExpressionState | None = None,
    ) -> Iterator[np.ndarray]:
        """BGR frames for 16 kHz float audio; ``n_frames`` fixes the count (default: audio length).

        ``timings`` accumulates seconds per stage: "mel" (audio analysis), "model" (warp), "paste".
        ``expression`` (one per video) adds brows, lids and blinks, mouth corners and head sway.
        """
        stages = timings if timings is not None else {}
        t0 = time.perf_counter()
        track = mouth_track(pcm16k, 16000, self.fps, n_frames)
        anim = self.animator(avatar)
        face = self.face(avatar) if expression is not None and expression.enabled else None
        stages["mel"] = stages.get("mel", 0.0) + time.perf_counter() - t0
        for o, w in zip(track.opening, track.width, strict=True):
            t1 = time.perf_counter()
            # The expression warps the portrait (re-warped only when it moved by a visible amount),
            # and the mouth is animated on top of that face: lip-sync stays as it was.
            base = face.base(anim.image, *expression.step()) if face is not None and expression else None
            region = anim.mouth_region(float(o), float(w), base)
            t2 = time.perf_counter()
            frame = anim.compose(region, base)
            t3 = time.perf_counter()
            stages["model"] = stages.get("model", 0.0) + t2 - t1
            stages["paste"] = stages.get("paste", 0.0) + t3 - t2
            yield frame
