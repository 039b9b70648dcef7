"""Wav2Lip's face input, and the paste-back of its output through a soft lower-face mask.

The reference pastes the upscaled 96×96 prediction as a hard square, which leaves the
well-known visible box and blurs the eyes. Blending only the lower face through a
Gaussian-feathered ellipse that fades to zero before the box edge leaves no seam.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from lipsync.faces import Box


def face_input(crop: np.ndarray) -> np.ndarray:
    """96×96 BGR crop → (6, 96, 96) float32: [lower half zeroed, full reference] / 255."""
    masked = crop.copy()
    masked[crop.shape[0] // 2 :] = 0
    both = np.concatenate([masked, crop], axis=2).astype(np.float32) / 255.0
    return np.ascontiguousarray(both.transpose(2, 0, 1))


@lru_cache(maxsize=32)
def feather_mask(width: int, height: int) -> np.ndarray:
    """(height, width, 1) float32 weights in [0, 1]: 1 over mouth and jaw, 0 at every box edge."""
    mask = np.zeros((height, width), dtype=np.float32)
    center = (round(width * 0.5), round(height * 0.66))
    axes = (max(1, round(width * 0.36)), max(1, round(height * 0.28)))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, thickness=-1)
    sigma = max(1.0, 0.06 * min(width, height))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    # Taper to exactly zero at the borders so the blur never ends in a step.
    ramp_x = np.clip(np.minimum(np.arange(width), np.arange(width)[::-1]) / (0.08 * width + 1), 0, 1)
    ramp_y = np.clip(np.minimum(np.arange(height), np.arange(height)[::-1]) / (0.08 * height + 1), 0, 1)
    mask *= np.outer(ramp_y, ramp_x).astype(np.float32)
    out = mask[:, :, None]
    out.setflags(write=False)
    return out


def paste(frame: np.ndarray, face: np.ndarray, box: Box) -> np.ndarray:
    """Blend ``face`` (any size, BGR uint8) into ``frame`` at ``box``; returns a new frame."""
    w, h = box.width, box.height
    resized = cv2.resize(face, (w, h), interpolation=cv2.INTER_CUBIC)
    out = frame.copy()
    region = out[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32)
    mask = feather_mask(w, h)
    region += (resized.astype(np.float32) - region) * mask
    out[box.y1 : box.y2, box.x1 : box.x2] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    return out
