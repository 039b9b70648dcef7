"""``/v1/vector_stores/{id}/file_batches``: attach several files at once and poll them as one
(``client.vector_stores.file_batches.create_and_poll`` / ``upload_and_poll``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.auth import Principal, require_scope
from gateway.jsonresponse import OrjsonResponse
from gateway.knowledge import bodies
from gateway.knowledge.api import knowledge_of, not_found
from gateway.knowledge.batches import batch_object
from gateway.knowledge.objects import list_page, store_file_object
from gateway.knowledge.service import KnowledgeService, NotFound
from gateway.schemas import parse_json_body, read_body, validate

router = APIRouter()
READ = require_scope("knowledge:read")
WRITE = require_scope("knowledge:write")
PREFIX = "/v1/vector_stores/{store_id}/file_batches"


async def _answer(knowledge: KnowledgeService, batch: Any) -> Response:
    body = batch_object(batch, await knowledge.batches.files(batch))
    headers = {"openai-poll-after-ms": "200"} if body["status"] in ("in_progress", "cancelling") else None
    return OrjsonResponse(body, headers=headers)


@router.post(PREFIX)
async def create_batch(store_id: str, request: Request, principal: Principal = WRITE) -> Response:
    knowledge = knowledge_of(request)
    limit = request.app.state.services.settings.max_upload_bytes
    body = validate(bodies.CreateBatch, parse_json_body(await read_body(request, limit)))
    chunking = (
        body.chunking_strategy.model_dump(exclude_none=True) if body.chunking_strategy else {"type": "auto"}
    )
    try:
        batch = await knowledge.create_batch(principal.tenant, store_id, body.pairs(), chunking)
    except NotFound as exc:
        raise not_found(exc) from None
    return await _answer(knowledge, batch)


@router.get(PREFIX + "/{batch_id}")
async def get_batch(store_id: str, batch_id: str, request: Request, principal: Principal = READ) -> Response:
    knowledge = knowledge_of(request)
    try:
        batch = await knowledge.batch(principal.tenant, store_id, batch_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return await _answer(knowledge, batch)


@router.post(PREFIX + "/{batch_id}/cancel")
async def cancel_batch(
    store_id: str, batch_id: str, request: Request, principal: Principal = WRITE
) -> Response:
    knowledge = knowledge_of(request)
    try:
        batch = await knowledge.batch(principal.tenant, store_id, batch_id)
    except NotFound as exc:
        raise not_found(exc) from None
    await knowledge.batches.cancel(batch)
    return await _answer(knowledge, await knowledge.batch(principal.tenant, store_id, batch_id))


@router.get(PREFIX + "/{batch_id}/files")
async def batch_files(
    store_id: str,
    batch_id: str,
    request: Request,
    limit: int = 20,
    after: str | None = None,
    before: str | None = None,
    filter: str | None = None,
    principal: Principal = READ,
) -> Response:
    knowledge = knowledge_of(request)
    try:
        batch = await knowledge.batch(principal.tenant, store_id, batch_id)
    except NotFound as exc:
        raise not_found(exc) from None
    rows = [r for r in await knowledge.batches.files(batch) if filter is None or r.status == filter]
    items = [store_file_object(r, knowledge.config) for r in rows]
    return OrjsonResponse(list_page(items, max(1, min(limit, 100)), after, before))
