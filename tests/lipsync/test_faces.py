"""Face pre-check on real photos, box handling, and a seamless paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lipsync.blend import feather_mask, paste
from lipsync.errors import FaceError, ImageError
from lipsync.faces import Box, calibrate, decode_image, detect_faces, precheck, smooth_boxes
from tests.lipsync.media import astronaut_bgr, faceless_png, png


def test_astronaut_passes_the_precheck() -> None:
    img = astronaut_bgr()
    box = precheck(img)
    raw = detect_faces(img)
    assert len(raw) == 1
    # The crop contains the detected face, reaches further down (chin + 10 px pad) and stays inside.
    assert box.y2 > raw[0].y2 + 10 and box.y1 <= raw[0].y1 + 1
    assert 0 <= box.x1 < box.x2 <= img.shape[1] and 0 <= box.y1 < box.y2 <= img.shape[0]
    assert 64 <= box.width <= 160 and box.height > box.width  # S3FD-like: taller than wide


def test_no_face() -> None:
    with pytest.raises(FaceError) as info:
        precheck(decode_image(faceless_png()))
    assert info.value.reason == "no_face" and "no face" in info.value.message


def test_several_faces_need_an_index() -> None:
    img = astronaut_bgr()
    pair = np.hstack([img, img])
    with pytest.raises(FaceError) as info:
        precheck(pair)
    assert info.value.reason == "multiple_faces" and "face_index" in info.value.message
    left = precheck(pair, face_index=0)
    right = precheck(pair, face_index=1)
    assert abs((right.x1 - left.x1) - img.shape[1]) <= 8  # same face, one image width apart
    with pytest.raises(FaceError, match="out of range"):
        precheck(pair, face_index=2)


def test_face_too_small() -> None:
    small = cv2.resize(astronaut_bgr(), (200, 200), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceError) as info:
        precheck(small, min_face_px=64)
    assert info.value.reason in ("face_too_small", "no_face")
    assert precheck(small, min_face_px=16).width > 0


def test_padded_crop_outside_the_image() -> None:
    img = astronaut_bgr()
    box = precheck(img)
    cut = np.ascontiguousarray(img[: box.y2 - 20])  # chin cut off by the bottom border
    with pytest.raises(FaceError) as info:
        precheck(cut)
    assert info.value.reason == "face_out_of_bounds"


def test_bad_image_bytes() -> None:
    with pytest.raises(ImageError):
        decode_image(b"this is not an image")
    with pytest.raises(ImageError):
        decode_image(png(np.zeros((10, 10, 3), np.uint8)))


def test_calibration_extends_the_haar_box_toward_the_chin() -> None:
    b = calibrate(Box(100, 100, 200, 200))
    assert b.y2 > 200 and b.y1 == 100 and b.x1 > 100 and b.x2 < 200


def test_forward_window_smoothing() -> None:
    boxes = [Box(i * 10, 0, i * 10 + 100, 100) for i in range(8)]
    out = smooth_boxes(boxes, window=5)
    assert out[0].x1 == 20  # mean of 0,10,20,30,40
    assert out[2].x1 == 40  # frames 2..6
    # The last frames have no full window ahead: they reuse the final one (frames 3..7).
    assert [b.x1 for b in out[3:]] == [50] * 5
    assert smooth_boxes([]) == []


def test_paste_back_is_seamless() -> None:
    img = astronaut_bgr()
    box = precheck(img)
    pred = np.zeros((96, 96, 3), np.uint8)  # a black face makes any seam obvious
    out = paste(img, pred, box)
    mask = feather_mask(box.width, box.height)
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    # Pixels on the box border are untouched, the mouth area is replaced.
    region = out[box.y1 : box.y2, box.x1 : box.x2].astype(int)
    orig = img[box.y1 : box.y2, box.x1 : box.x2].astype(int)
    assert np.array_equal(region[0], orig[0]) and np.array_equal(region[-1], orig[-1])
    assert np.array_equal(region[:, 0], orig[:, 0]) and np.array_equal(region[:, -1], orig[:, -1])
    mouth = (int(box.height * 0.7), int(box.width * 0.5))
    assert region[mouth].sum() < orig[mouth].sum() * 0.2
    # No hard step anywhere: neighbouring pixels across the blend differ by far less than a hard paste.
    steps = np.abs(np.diff(out.astype(int), axis=0))[box.y1 : box.y2, box.x1 : box.x2].max()
    hard = img.copy()
    hard[box.y1 : box.y2, box.x1 : box.x2] = 0
    hard_steps = np.abs(np.diff(hard.astype(int), axis=0))[box.y1 - 1 : box.y2, box.x1 : box.x2].max()
    assert steps < hard_steps
    assert np.array_equal(out[: box.y1], img[: box.y1])
