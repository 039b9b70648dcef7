"""``GET /admin/providers``: every routed target with its breaker and its provider's health.

What an operator on call needs in one look: which targets are skipped right now (breaker
open or half-open), how close a closed one is to tripping (window counts, consecutive
failures), when an open one will be probed again, and whether the backend itself says it
is healthy.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from fastapi import APIRouter, Request

from gateway.auth import Principal, require_scope
from providers.base import CAPABILITIES

router = APIRouter()


@router.get("/admin/providers")
async def admin_providers(request: Request, principal: Principal = require_scope("admin")) -> dict[str, Any]:
    services = request.app.state.services
    health_by_provider: dict[tuple[str, str], dict[str, Any]] = {}

    async def health(capability: str, name: str) -> dict[str, Any]:
        key = (capability, name)
        if key not in health_by_provider:
            provider = services.registry.get(capability, name)
            if provider is None:
                health_by_provider[key] = {"ok": False, "detail": "not configured"}
            else:
                try:
                    h = await asyncio.wait_for(provider.health(), timeout=2.0)
                    health_by_provider[key] = {"ok": h.ok, "detail": h.detail}
                except Exception as exc:  # a broken health check is itself the answer
                    health_by_provider[key] = {"ok": False, "detail": f"health check failed: {exc!r}"}
        return health_by_provider[key]

    capabilities: dict[str, list[dict[str, Any]]] = {}
    for capability in CAPABILITIES:
        chain = [str(t) for t in services.router.resolve(capability, None)]
        rows = []
        for target in services.router.targets(capability):
            snap = await services.router.breakers.get(target).snapshot()
            rows.append(
                {
                    "target": str(target),
                    "provider": target.provider,
                    "model": target.model,
                    "in_default_chain": str(target) in chain,
                    "chain_position": chain.index(str(target)) if str(target) in chain else None,
                    "configured": services.registry.get(capability, target.provider) is not None,
                    "health": await health(capability, target.provider),
                    "breaker": {
                        "state": snap.state.value,
                        "calls": snap.calls,
                        "failures": snap.failures,
                        "consecutive_failures": snap.consecutive_failures,
                        "trips": snap.trips,
                        "cooldown_remaining_s": round(snap.cooldown_remaining_s, 3),
                    },
                }
            )
        capabilities[capability] = rows
    return {
        "cloud_enabled": services.settings.cloud_enabled,
        "breaker_backend": services.router.breakers.backend,
        "breaker_settings": dataclasses.asdict(services.settings.breaker),
        "capabilities": capabilities,
    }
