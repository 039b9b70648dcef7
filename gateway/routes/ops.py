"""``GET /metrics``: the Prometheus text exposition of this process's registry.

The exposition names tenants and key ids. With ``TALKGATE_METRICS_TOKEN`` set, a scrape must
send it as a bearer token (Prometheus: ``authorization.credentials_file``); unset, /metrics is
open and should be reachable only from the monitoring network.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.errors import APIError
from gateway.metrics import CONTENT_TYPE

router = APIRouter()


def _check_token(request: Request, token: str) -> None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(
            401,
            "/metrics needs the metrics token (TALKGATE_METRICS_TOKEN) as 'Authorization: Bearer <token>'.",
            type="authentication_error",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token:
        _check_token(request, token)
    registry = request.app.state.services.metrics
    if registry is None:
        return Response("metrics are disabled\n", status_code=404, media_type="text/plain")
    return Response(registry.render(), media_type=CONTENT_TYPE)
