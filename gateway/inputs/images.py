"""Image uploads are sized from their header before a single pixel is decoded.

Why: a PNG of one colour compresses about 1000:1, so a 1 MB upload can declare 20000×20000
pixels, and decoding it first (as ``cv2.imdecode`` does) allocates 1.2 GB before any size check
can run (measured: 2.5 GB of RSS and 5.8 s for one such request). Pillow's ``Image.open``
reads only the header (PNG IHDR, JPEG SOF, GIF, BMP and WebP headers), so the dimensions are
known for the cost of a few hundred bytes. Only the first frame of an animated GIF, WebP or
PNG is ever decoded (``cv2.imdecode`` reads one frame). OpenCV's own pixel cap is set as a
second line (``lipsync/faces.py``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from lipsync.errors import ImageError

#: Formats accepted for portraits (what Pillow calls them).
FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "WEBP", "MPO"})  # MPO: a JPEG from a phone camera
ACCEPTED = "a JPEG, PNG, BMP, GIF or WebP file"


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str
    width: int
    height: int


def read_header(data: bytes) -> ImageHeader:
    """The format and dimensions from the header; ImageError when it is not an image we accept."""
    if not data:
        raise ImageError("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                header = ImageHeader(str(img.format), int(img.width), int(img.height))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard, on the header alone (above ~89 megapixels)
        limit = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ImageError(f"the image declares too many pixels (over {limit:.0f} megapixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError(f"the image could not be read (send {ACCEPTED})") from None
    if header.format not in FORMATS:
        raise ImageError(f"{header.format} images are not accepted (send {ACCEPTED})")
    return header


def check_image(data: bytes, limits: Any) -> ImageHeader:
    """Refuse an image above ``limits.image_max_side`` or ``limits.image_max_megapixels``."""
    header = read_header(data)
    w, h = header.width, header.height
    if max(w, h) > limits.image_max_side:
        raise ImageError(f"the image is {w}×{h}; the largest side may be at most {limits.image_max_side} px")
    if w * h > limits.image_max_megapixels * 1_000_000:
        raise ImageError(
            f"the image is {w}×{h} ({w * h / 1e6:.1f} megapixels); at most "
            f"{limits.image_max_megapixels:g} megapixels are accepted"
        )
    return header
