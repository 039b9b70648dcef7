"""Face detection (OpenCV Haar cascades), the avatar pre-check, box padding and smoothing.

Wav2Lip was trained on S3FD boxes (brow to chin). A Haar frontal-face box is square and
stops around the lower lip, so ``calibrate`` stretches it toward S3FD-like extents before
the usual pads (top, bottom, left, right; default 0, 10, 0, 0) are applied.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lipsync.errors import FaceError, ImageError

_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
#: Haar → S3FD-like extents, as fractions of the Haar box (top, bottom, left, right; + = outward).
CALIBRATION = (0.0, 0.12, -0.04, -0.04)
#: A padded box may stick out of the image by this fraction of its area before it is refused.
MAX_OUTSIDE_FRACTION = 0.10
MAX_IMAGE_SIDE = 4096
# OpenCV's own cap on decoded pixels (read at its first decode), a second line behind the
# gateway's header check (gateway/inputs/images.py): its default allows 1 gigapixel.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_SIDE * MAX_IMAGE_SIDE))


@dataclass(frozen=True, slots=True)
class Box:
    """Pixel box, x2/y2 exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]


_local = threading.local()


def _cascades() -> list[cv2.CascadeClassifier]:
    """One set of classifiers per thread: detectMultiScale is not safe to share across threads."""
    found = getattr(_local, "cascades", None)
    if found is None:
        found = []
        for name in _CASCADES:
            clf = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if clf.empty():
                raise RuntimeError(
                    f"OpenCV Haar cascade {name} is missing (needs opencv-python-headless < 5)"
                )
            found.append(clf)
        _local.cascades = found
    return found


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes → BGR uint8 array; ImageError when undecodable or out of bounds."""
    if not data:
        raise ImageError("the image is empty")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError("the image could not be decoded (send a JPEG, PNG, BMP or WebP file)")
    h, w = img.shape[:2]
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ImageError(f"the image is {w}×{h}; the largest side may be at most {MAX_IMAGE_SIDE} px")
    if min(h, w) < 32:
        raise ImageError(f"the image is {w}×{h}; it must be at least 32 px on each side")
    return img


def detect_faces(image: np.ndarray, min_size: int = 24) -> list[Box]:
    """Frontal faces, left to right. Tries a second cascade when the first finds nothing."""
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    for clf in _cascades():
        found = clf.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        if len(found):
            boxes = [Box(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]
            return sorted(boxes, key=lambda b: (b.x1, b.y1))
    return []


def calibrate(box: Box) -> Box:
    """Haar box → S3FD-like box (unclipped; may extend past the image)."""
    top, bottom, left, right = CALIBRATION
    w, h = box.width, box.height
    return Box(
        round(box.x1 - left * w),
        round(box.y1 - top * h),
        round(box.x2 + right * w),
        round(box.y2 + bottom * h),
    )


def pad_box(box: Box, pads: Sequence[int]) -> Box:
    """Adds pads (top, bottom, left, right) outward, unclipped."""
    top, bottom, left, right = pads
    return Box(box.x1 - left, box.y1 - top, box.x2 + right, box.y2 + bottom)


def clip_box(box: Box, width: int, height: int) -> Box:
    return Box(max(0, box.x1), max(0, box.y1), min(width, box.x2), min(height, box.y2))


def outside_fraction(box: Box, width: int, height: int) -> float:
    inside = clip_box(box, width, height)
    area = max(1, box.width * box.height)
    return 1.0 - max(0, inside.width) * max(0, inside.height) / area


def precheck(
    image: np.ndarray,
    *,
    face_index: int | None = None,
    pads: Sequence[int] = (0, 10, 0, 0),
    min_face_px: int = 64,
) -> Box:
    """The crop box to animate, or FaceError with a reason a user can act on.

    Only detections at least ``min_face_px`` wide count (small background false positives
    would otherwise make every photo "several faces").
    """
    h, w = image.shape[:2]
    faces = detect_faces(image)
    if not faces:
        raise FaceError("no face was found in the image; use a well-lit, frontal portrait", reason="no_face")
    large = [f for f in faces if min(f.width, f.height) >= min_face_px]
    if not large:
        biggest = max(min(f.width, f.height) for f in faces)
        raise FaceError(
            f"the face is too small ({biggest} px; at least {min_face_px} px is needed); "
            "use a closer or larger portrait",
            reason="face_too_small",
        )
    if face_index is not None:
        if not 0 <= face_index < len(large):
            raise FaceError(
                f"face_index {face_index} is out of range: {len(large)} face(s) found (0 = leftmost)",
                reason="face_index_out_of_range",
            )
        face = large[face_index]
    elif len(large) > 1:
        boxes = ", ".join(str(f.as_list()) for f in large)
        raise FaceError(
            f"{len(large)} faces were found ({boxes}); pass face_index (0 = leftmost) to pick one",
            reason="multiple_faces",
        )
    else:
        face = large[0]
    padded = pad_box(calibrate(face), pads)
    if outside_fraction(padded, w, h) > MAX_OUTSIDE_FRACTION:
        raise FaceError(
            "the face is cut off by the image border (the crop around it falls outside the image); "
            "leave some margin around the face",
            reason="face_out_of_bounds",
        )
    crop = clip_box(padded, w, h)
    if crop.width < 16 or crop.height < 16:
        raise FaceError("the face crop is degenerate", reason="face_out_of_bounds")
    return crop


def smooth_boxes(boxes: Sequence[Box], window: int = 5) -> list[Box]:
    """Forward-looking moving average (box i = mean of boxes i..i+window-1; the tail reuses the last window).

    Removes detector jitter on video input; integer truncation as the reference does.
    """
    if not boxes:
        return []
    arr = np.array([b.as_list() for b in boxes], dtype=np.float64)
    n = len(arr)
    out = []
    for i in range(n):
        lo = min(i, max(0, n - window))
        mean = arr[lo : lo + window].mean(axis=0)
        out.append(Box(*(int(v) for v in mean)))
    return out


def face_crop(image: np.ndarray, box: Box, size: int = 96) -> np.ndarray:
    """The model's input crop: the box resized (bilinear, aspect not kept) to size×size."""
    return cv2.resize(image[box.y1 : box.y2, box.x1 : box.x2], (size, size), interpolation=cv2.INTER_LINEAR)
