"""Real test media: the scikit-image astronaut portrait (speech is in ``tests.sounds``)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=1)
def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def astronaut_png() -> bytes:
    return png(astronaut_bgr())


def faceless_png() -> bytes:
    """A smooth gradient with some shapes: an image, but no face in it."""
    y, x = np.mgrid[0:256, 0:320]
    img = np.stack([(x * 0.7) % 256, (y * 0.9) % 256, ((x + y) * 0.4) % 256], axis=2).astype(np.uint8)
    cv2.circle(img, (160, 128), 40, (30, 200, 90), -1)
    return png(img)
