"""Image URLs in chat messages are fetched with aiohttp, under the same limits and egress proxy as
the cloud calls (gateway/structured/images.py ``_fetch``), from a real local server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.errors import APIError
from gateway.settings import Settings
from gateway.structured.images import _fetch
from tests.proxy_support import RecordingProxy
from tests.servers import ServerThread


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


#: Hosts the local image server answered /cat.png for (the rebinding test checks it stays unreached).
SERVED: list[str] = []


async def image(request: Request) -> Response:
    SERVED.append(request.headers.get("host", ""))
    return Response(png(), media_type="image/png")


async def big(request: Request) -> Response:
    return Response(b"\x89PNG" + b"\x00" * 5000, media_type="image/png")


async def text(request: Request) -> Response:
    return Response("hello", media_type="text/plain")


async def moved(request: Request) -> Response:
    return RedirectResponse("/cat.png", status_code=302)


@pytest.fixture(scope="module")
def images() -> Iterator[ServerThread]:
    routes = [
        Route("/cat.png", image),
        Route("/big.png", big),
        Route("/cat.txt", text),
        Route("/moved", moved),
    ]
    server = ServerThread(Starlette(routes=routes)).start()
    yield server
    server.stop()


def settings(**egress: Any) -> Settings:
    vision = {"url_allow": ["127.0.0.1"], "allow_private_addresses": True, "max_image_bytes": 4096}
    return Settings(vision=vision, egress=egress, log_json=False)


async def test_an_allowed_image_url_is_fetched(images: ServerThread) -> None:
    assert await _fetch(f"{images.url}/cat.png", settings(), "messages[0]") == png()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/big.png", "larger than 4096 bytes"),
        ("/cat.txt", "image content type"),
        ("/moved", "answered HTTP 302"),  # redirects are not followed (they could lead anywhere)
    ],
)
async def test_fetch_limits(images: ServerThread, path: str, reason: str) -> None:
    with pytest.raises(APIError) as caught:
        await _fetch(f"{images.url}{path}", settings(), "messages[0]")
    assert caught.value.status == 400 and reason in caught.value.message


async def test_the_fetch_goes_through_the_egress_proxy(images: ServerThread) -> None:
    proxy = RecordingProxy().start()
    try:
        data = await _fetch(f"{images.url}/cat.png", settings(proxy=proxy.url, proxy_loopback=True), "m")
    finally:
        proxy.stop()
    assert data == png() and proxy.seen == [f"GET {images.url}/cat.png"]


async def test_dns_rebinding_cannot_reach_a_private_address(
    images: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name answers a public address when checked and 127.0.0.1 next time: the fetch connects
    to the checked address (pinned), never looks the name up again, so the local image server
    (the "private network") is not reached."""
    import asyncio
    import socket

    lookups: list[str] = []
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", images.port))]
    private = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", images.port))]

    async def rebinding(host: str, port: Any, **kw: Any) -> list[Any]:
        lookups.append(host)
        return public if len(lookups) == 1 else private

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebinding)
    vision = {"url_allow": ["rebind.test"], "fetch_timeout_s": 2.0}
    served_before = len(SERVED)
    with pytest.raises(APIError) as caught:
        await _fetch(
            f"http://rebind.test:{images.port}/cat.png", Settings(vision=vision, log_json=False), "m"
        )
    # The pinned public address is unreachable here, or (on sandboxes whose network answers every
    # address) answers something else: either way the fetch fails, and the private server was not hit.
    assert caught.value.status == 400
    assert "could not be fetched" in caught.value.message or "answered HTTP" in caught.value.message
    assert SERVED[served_before:] == []
    assert lookups == ["rebind.test"]  # checked once; the connection used that answer
