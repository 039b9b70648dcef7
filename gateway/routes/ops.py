"""``GET /metrics``: the Prometheus text exposition of this process's registry."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = request.app.state.services.metrics
    if registry is None:
        return Response("metrics are disabled\n", status_code=404, media_type="text/plain")
    return Response(registry.render(), media_type=CONTENT_TYPE)
