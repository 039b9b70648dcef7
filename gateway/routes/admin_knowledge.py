"""``GET /admin/knowledge``: knowledge-base storage per tenant (files, bytes, stores, chunks, failed
ingestions) against each tenant's storage quota. Refreshes the storage gauges of /metrics too."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.auth import Principal, require_admin
from gateway.jsonresponse import OrjsonResponse
from gateway.knowledge.api import knowledge_of

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/knowledge")
async def knowledge_usage(request: Request, principal: Principal = require_admin) -> Response:
    knowledge = knowledge_of(request)
    rows = await knowledge.refresh_storage_metrics()
    for row in rows:
        row["quota_bytes"] = knowledge.quota_for(row["tenant"])
    return OrjsonResponse({"object": "list", "data": rows})
