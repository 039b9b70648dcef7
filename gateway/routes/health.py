"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway.jsonresponse import OrjsonResponse

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> OrjsonResponse:
    """Ready when every capability has at least one usable provider.

    ``degraded`` (still ready, HTTP 200) when the cloud is off (no DASHSCOPE_API_KEY) or the
    breaker of a capability's first cloud target is open, i.e. answers come from fallbacks.
    """
    services = request.app.state.services
    caps: dict[str, list[str]] = {"chat": [], "asr": [], "tts": []}
    unhealthy: dict[str, str] = {}
    for cap, provider in services.registry.all():
        if cap not in caps:  # embedding/rerank serve the knowledge base, which degrades to lexical
            continue
        health = await provider.health()
        if health.ok:
            caps[cap].append(provider.name)
        for model, why in health.unhealthy_models.items():  # e.g. a worker that keeps crashing
            unhealthy[f"{cap}:{provider.name}:{model}"] = why
    ready = all(caps.values())
    reasons: list[str] = []
    if not services.settings.cloud_enabled:
        mode = "degraded"
        reasons.append("DASHSCOPE_API_KEY is not set: serving local models only")
    else:
        mode = "cloud"
        open_targets = await _open_primary_targets(services)
        if open_targets:
            mode = "degraded"
            reasons.append("circuit open for " + ", ".join(open_targets) + ": serving fallbacks")
    body = {
        "status": "ready" if ready else "not_ready",
        "mode": mode,
        "degraded": mode == "degraded",
        "providers": caps,
    }
    if unhealthy:
        body["unhealthy"] = unhealthy
    if reasons:
        body["reason"] = "; ".join(reasons)
    return OrjsonResponse(body, status_code=200 if ready else 503)


async def _open_primary_targets(services: Any) -> list[str]:
    """The first cloud target of each capability's default chain whose breaker is not closed."""
    if services.breakers is None:
        return []
    found = []
    for capability in ("chat", "asr", "tts"):
        try:
            chain = services.router.resolve(capability, None)
        except Exception:  # a route missing from the config is reported elsewhere
            continue
        first = next((t for t in chain if t.provider == "bailian"), None)
        if first is None:
            continue
        snap = await services.breakers.get(first).snapshot()
        if snap.state != "closed":
            found.append(f"{first} ({snap.state})")
    return found
