"""Image bombs are refused from the header (issue 18 item 1): fast, and without the gateway's
memory growing; multi-frame images use their first frame. Gateway figures come from /proc."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from gateway.inputs.images import check_image, read_header
from lipsync.errors import ImageError
from tests.lipsync.media import astronaut_bgr, astronaut_png
from tests.servers import GatewayProcess

LIMITS = SimpleNamespace(image_max_side=4096, image_max_megapixels=16.8)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@lru_cache(maxsize=2)
def png_bomb(side: int) -> bytes:
    """A valid side×side RGB PNG of one colour, compressed ~1000:1 (20000 px: 1.17 MB, 1.2 GB decoded)."""
    compressor = zlib.compressobj(9)
    rows = (b"\x00" * (1 + side * 3)) * 50
    body = [compressor.compress(rows) for _ in range(side // 50)]
    idat = b"".join(body) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) claims width×height."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 80)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_headers_of_accepted_formats(fmt: str) -> None:
    header = read_header(encoded(fmt))
    assert (header.width, header.height) == (40, 30)


def test_other_formats_and_garbage_are_refused() -> None:
    with pytest.raises(ImageError, match="TIFF images are not accepted"):
        read_header(encoded("TIFF"))
    with pytest.raises(ImageError, match="could not be read"):
        read_header(b"<html>not an image</html>")
    with pytest.raises(ImageError, match="empty"):
        read_header(b"")


def test_limits_from_the_header_alone() -> None:
    with pytest.raises(ImageError, match="too many pixels"):
        check_image(png_bomb(20000), LIMITS)
    with pytest.raises(ImageError, match="too many pixels"):
        check_image(jpeg_claiming(60000, 60000), LIMITS)
    with pytest.raises(ImageError, match="8000×6000"):
        check_image(jpeg_claiming(8000, 6000), LIMITS)
    with pytest.raises(ImageError, match="megapixels"):
        check_image(
            jpeg_claiming(4500, 4000), SimpleNamespace(image_max_side=5000, image_max_megapixels=16.8)
        )
    assert check_image(astronaut_png(), LIMITS).width == 512


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):  # the peak resident set since the process started
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        {"TALKGATE_DATA_DIR": str(tmp_path_factory.mktemp("images")), "TALKGATE_LOG_JSON": "false"}
    ).start()
    yield process
    process.stop()


def post_avatar(gateway: GatewayProcess, data: bytes, name: str = "a.png") -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/avatars", files={"image": (name, data)}, timeout=60)


@pytest.mark.slow
def test_png_bombs_in_parallel_are_refused_fast_without_memory_growth(gateway: GatewayProcess) -> None:
    bomb = png_bomb(20000)
    assert post_avatar(gateway, astronaut_png()).status_code == 201  # warm: the real path's own memory
    before = peak_rss_mb(gateway.process.pid)
    start = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: post_avatar(gateway, bomb), range(3)))
    seconds = time.monotonic() - start
    for r in answers:
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_image", r.text
        assert "too many pixels" in r.json()["error"]["message"]
    growth = peak_rss_mb(gateway.process.pid) - before
    assert seconds < 0.5 * 3, seconds  # three uploads of 1.17 MB, refused from their headers
    assert growth < 100, f"the gateway's peak RSS grew by {growth:.0f} MB"


@pytest.mark.slow
def test_huge_jpeg_and_inline_talk_image_are_refused(gateway: GatewayProcess) -> None:
    r = post_avatar(gateway, jpeg_claiming(60000, 60000), "a.jpg")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_image"
    import base64

    body = {"text": "Hello.", "image": base64.b64encode(png_bomb(20000)).decode()}
    r = httpx.post(f"{gateway.url}/v1/talk", json=body, timeout=60)
    assert r.status_code == 400 and "too many pixels" in r.text


@pytest.mark.slow
def test_an_animated_gif_uses_its_first_frame(gateway: GatewayProcess) -> None:
    face = Image.fromarray(astronaut_bgr()[:, :, ::-1])
    noise = [Image.effect_noise((512, 512), 64).convert("RGB") for _ in range(30)]
    out = io.BytesIO()
    face.save(out, "GIF", save_all=True, append_images=noise, duration=40, loop=0)
    r = post_avatar(gateway, out.getvalue(), "a.gif")
    assert r.status_code == 201, r.text  # the face is found in frame 0; the noise frames are never read
    assert r.json()["width"] == 512
