"""Simulated Qwen-VL image understanding: decode ``{"image": ...}`` items, describe, count tokens.

Why it really decodes: a gateway that translates OpenAI ``image_url`` parts must deliver the image
bytes intact; an answer naming the decoded size and dominant colour proves that end to end.

- Accepted: base64 data URLs ``data:image/<png|jpeg|webp|bmp|tiff>;base64,...`` up to 10 MB whose
  MIME type matches the decoded format (reference §3.2). The simulator never downloads anything:
  an ``http(s)://``, ``oss://`` or ``file://`` reference is a 400 InvalidParameter saying so.
- Refused as Bailian documents (§3.3): a side of 10 px or less, a long/short side ratio above
  200, more pixels than 8K (7680×4320, the simulator's own cap), other formats (415).
- Description (deterministic): "The image is WxH pixels and mostly <colour>." for one image,
  "Image 1 is WxH pixels and mostly <colour>. Image 2 ..." for several. The colour is the most
  frequent of a fixed palette (black, white, gray, red, orange, yellow, green, cyan, blue, purple,
  pink, brown) over a 64-pixel thumbnail, nearest by RGB distance; transparent pixels are skipped.
- Tokens (§3.4): sides rounded to the model's patch (32 px, or 28 for Qwen2.5-VL/QVQ), the area
  scaled into [4 patches, max_pixels] keeping the aspect ratio, then one token per patch plus 2.
  ``max_pixels`` beside the image lowers or raises the model default (up to the model maximum);
  ``parameters.vl_high_resolution_images: true`` fixes the cap at 16,384 tokens.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from gateway.dashscope.bodies import media_data_url
from gateway.dashscope.errors import DashScopeError, invalid
from gateway.sim.capabilities import Caps

MAX_PIXELS_8K = 7680 * 4320
HIGH_RES_TOKENS = 16_384
_MIME = {
    "PNG": ("image/png",),
    "JPEG": ("image/jpeg", "image/jpg"),
    "WEBP": ("image/webp",),
    "BMP": ("image/bmp", "image/x-ms-bmp"),
    "TIFF": ("image/tiff",),
}
_PALETTE = (
    ("black", (0, 0, 0)),
    ("white", (255, 255, 255)),
    ("gray", (128, 128, 128)),
    ("red", (220, 20, 20)),
    ("orange", (255, 140, 0)),
    ("yellow", (255, 220, 0)),
    ("green", (30, 160, 30)),
    ("cyan", (0, 200, 200)),
    ("blue", (30, 60, 220)),
    ("purple", (130, 40, 170)),
    ("pink", (255, 130, 180)),
    ("brown", (130, 80, 30)),
)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    colour: str
    tokens: int


@dataclass(frozen=True, slots=True)
class ImagePart:
    """One ``{"image": ...}`` item: which message it is in and its per-item ``max_pixels``."""

    message_index: int
    ref: str
    max_pixels: int | None


def image_parts(messages: list[dict[str, Any]]) -> list[ImagePart]:
    """Every image item of the conversation; refuses input kinds the simulator does not model."""
    parts = []
    for i, message in enumerate(messages):
        content = message.get("content")
        for item in content if isinstance(content, list) else []:
            if not isinstance(item, dict):
                continue
            for kind in ("video", "audio"):
                if kind in item:
                    raise invalid(f"The simulator does not accept {kind} input for vision models.")
            if "image" in item:
                ref = item["image"]
                if not isinstance(ref, str) or not ref:
                    raise invalid("An image item must be a non-empty string (a data URL).")
                limit = item.get("max_pixels")
                parts.append(ImagePart(i, ref, limit if isinstance(limit, int) and limit > 0 else None))
    return parts


def inspect(part: ImagePart, caps: Caps, high_res: bool) -> ImageInfo:
    """Decode one image and describe it; raises DashScopeError for what Bailian would refuse."""
    data, mime = _decode_data_url(part.ref)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise invalid("The image is larger than 8K (7680x4320 pixels).") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DashScopeError(
            415, "BadRequest.UnsupportedFileFormat", "The image could not be decoded."
        ) from exc
    with image:
        fmt = image.format or ""
        if fmt not in _MIME:
            raise DashScopeError(
                415, "BadRequest.UnsupportedFileFormat", f"Unsupported image format: {fmt or 'unknown'}."
            )
        if mime not in _MIME[fmt]:
            raise invalid(f"The data URL declares {mime} but the image is {_MIME[fmt][0]}.")
        width, height = image.size
        _check_size(width, height)
        try:
            colour = _dominant_colour(image)
        except (OSError, ValueError) as exc:
            raise DashScopeError(
                415, "BadRequest.UnsupportedFileFormat", "The image could not be decoded."
            ) from exc
    return ImageInfo(width, height, colour, image_tokens(width, height, caps, part.max_pixels, high_res))


def _decode_data_url(ref: str) -> tuple[bytes, str]:
    if not ref.startswith("data:"):
        raise invalid(
            "The simulator does not download images: send the image inline as a base64 data URL "
            f"(data:image/png;base64,...), not {ref[:80]}"
        )
    url = media_data_url(ref, "image")
    return url.data, url.mime


def _check_size(width: int, height: int) -> None:
    if width <= 10 or height <= 10:
        raise invalid(f"The image width and height must be greater than 10 pixels, got {width}x{height}.")
    if max(width, height) / min(width, height) > 200:
        raise invalid(f"The image aspect ratio must not exceed 200:1, got {width}x{height}.")
    if width * height > MAX_PIXELS_8K:
        raise invalid(f"The image is larger than 8K (7680x4320 pixels), got {width}x{height}.")


def _dominant_colour(image: Image.Image) -> str:
    image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale
    small = image.convert("RGBA")
    small.thumbnail((64, 64))
    counts: Counter[str] = Counter()
    pixels = small.tobytes()
    for i in range(0, len(pixels), 4):
        r, g, b, a = pixels[i : i + 4]
        if a >= 128:
            counts[_nearest(r, g, b)] += 1
    if not counts:
        return "transparent"
    best = max(counts.values())
    return next(name for name, _ in _PALETTE if counts[name] == best)


def _nearest(r: int, g: int, b: int) -> str:
    return min(
        _PALETTE, key=lambda item: (r - item[1][0]) ** 2 + (g - item[1][1]) ** 2 + (b - item[1][2]) ** 2
    )[0]


def image_tokens(width: int, height: int, caps: Caps, item_max: int | None, high_res: bool) -> int:
    """Bailian's documented estimate (module notes); the real ``usage`` is authoritative."""
    patch = caps.patch_px
    ceiling = 16_777_216 if patch == 32 else 12_845_056
    cap = min(item_max or caps.max_pixels, ceiling)
    max_pixels = HIGH_RES_TOKENS * patch * patch if high_res else cap
    min_pixels = 4 * patch * patch
    max_pixels = max(max_pixels, min_pixels)
    h = max(patch, round(height / patch) * patch)
    w = max(patch, round(width / patch) * patch)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(patch, math.floor(height / beta / patch) * patch)
        w = max(patch, math.floor(width / beta / patch) * patch)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / patch) * patch
        w = math.ceil(width * beta / patch) * patch
    return (h // patch) * (w // patch) + 2


def describe(infos: list[ImageInfo]) -> str:
    """The deterministic answer about the images of the last user message."""
    if len(infos) == 1:
        info = infos[0]
        return f"The image is {info.width}x{info.height} pixels and mostly {info.colour}."
    return " ".join(
        f"Image {n} is {info.width}x{info.height} pixels and mostly {info.colour}."
        for n, info in enumerate(infos, 1)
    )
