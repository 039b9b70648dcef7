"""``GET /admin/knowledge``: knowledge-base storage per tenant (files, bytes, stores, chunks, failed
ingestions) against each tenant's storage quota. Refreshes the storage gauges of /metrics too.

``POST /admin/knowledge/vector_stores/{id}/reembed``: (re)starts embedding a store's chunks into
the current embedding space (gateway/knowledge/reembed.py); 202 with the store's progress, which
``GET /v1/vector_stores/{id}`` shows as ``reembedding`` until it is ``completed``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gateway.auth import Principal, require_admin
from gateway.errors import APIError
from gateway.jsonresponse import OrjsonResponse
from gateway.knowledge.api import knowledge_of, not_found
from gateway.knowledge.service import NotFound

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/knowledge")
async def knowledge_usage(request: Request, principal: Principal = require_admin) -> Response:
    knowledge = knowledge_of(request)
    rows = await knowledge.refresh_storage_metrics()
    for row in rows:
        row["quota_bytes"] = knowledge.quota_for(row["tenant"])
    return OrjsonResponse({"object": "list", "data": rows})


@router.post("/knowledge/vector_stores/{store_id}/reembed", status_code=202)
async def reembed_store(
    request: Request, store_id: Annotated[str, Path(max_length=64)], principal: Principal = require_admin
) -> Response:
    knowledge = knowledge_of(request)
    if not knowledge.encoders.can_embed:
        raise APIError(
            409,
            "This gateway cannot embed (no embedding route is configured or knowledge.dense is off).",
            code="embedding_unavailable",
        )
    try:
        row = await knowledge.reembed(store_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse(
        {"id": row.id, "embedding_model": row.embedding_model, "reembedding": row.reembed}, status_code=202
    )
