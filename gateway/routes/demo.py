"""The demo page: ``/`` → ``/demo``, plain HTML/CSS/JS served from gateway/web/ (no build, no CDN).

``/demo/config.json`` hands the page what it cannot know: whether keys are required and the
ICE servers of the WebRTC leg (the browser needs the same STUN/TURN servers as the gateway).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from gateway.errors import APIError

router = APIRouter()

WEB = Path(__file__).resolve().parent.parent / "web"
#: The only files served, with their types (no directory listing, no path from the URL).
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "i18n.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: The page talks only to its own origin; no inline script, no third-party anything.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)


@router.get("/", include_in_schema=False)
async def root() -> Response:
    return RedirectResponse("/demo", status_code=307)


@router.get("/demo", include_in_schema=False)
async def demo() -> Response:
    return _file("index.html")


@router.get("/demo/config.json", include_in_schema=False)
async def config(request: Request) -> Response:
    settings = request.app.state.services.settings
    ice = [s.model_dump(exclude_none=True) for s in settings.webrtc.ice_servers]
    return JSONResponse(
        {"auth_required": bool(settings.auth_required), "ice_servers": ice, "fps": settings.webrtc.fps},
        headers={"cache-control": "no-store"},
    )


@router.get("/demo/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in FILES:
        raise APIError(404, "Not found", type="not_found_error", code="not_found")
    return _file(name)


def _file(name: str) -> Response:
    return FileResponse(
        WEB / name,
        media_type=FILES[name],
        headers={
            "content-security-policy": CSP,
            "x-content-type-options": "nosniff",
            "cache-control": "no-cache",
        },
    )
