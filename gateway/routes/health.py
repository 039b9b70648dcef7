"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> ORJSONResponse:
    """Ready when every capability has at least one usable provider; 'degraded' when the cloud is off."""
    services = request.app.state.services
    caps: dict[str, list[str]] = {"chat": [], "asr": [], "tts": []}
    for cap, provider in services.registry.all():
        health = await provider.health()
        if health.ok:
            caps[cap].append(provider.name)
    ready = all(caps.values())
    mode = "cloud" if services.settings.cloud_enabled else "degraded"
    body = {
        "status": "ready" if ready else "not_ready",
        "mode": mode,
        "degraded": mode == "degraded",
        "providers": caps,
    }
    if mode == "degraded":
        body["reason"] = "DASHSCOPE_API_KEY is not set: serving local models only"
    return ORJSONResponse(body, status_code=200 if ready else 503)
