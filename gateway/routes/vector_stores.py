"""``/v1/vector_stores``: stores, their files (ingestion status) and search, as the openai SDK calls them.

Thin: bodies are validated by gateway/knowledge/bodies.py, work is done by the knowledge service,
answers are built by gateway/knowledge/objects.py. Every id is the caller's tenant's or a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.auth import Principal, require_scope
from gateway.context import get_context
from gateway.jsonresponse import OrjsonResponse
from gateway.knowledge import bodies
from gateway.knowledge.api import knowledge_of, not_found
from gateway.knowledge.objects import list_page, search_page, store_file_object, store_object
from gateway.knowledge.service import KnowledgeService, NotFound
from gateway.schemas import parse_json_body, read_body, validate

router = APIRouter()

#: The openai SDK's pollers wait this long between two retrievals of an in-progress file.
POLL_AFTER_MS = "200"
READ = require_scope("knowledge:read")
WRITE = require_scope("knowledge:write")


async def _body(request: Request, model: type[Any]) -> Any:
    limit = request.app.state.services.settings.max_upload_bytes
    return validate(model, parse_json_body(await read_body(request, limit)))


async def _store_json(knowledge: KnowledgeService, row: Any) -> dict[str, Any]:
    counts = await knowledge.store.file_counts([row.id])
    usage = await knowledge.store.usage_bytes([row.id])
    return store_object(row, counts[row.id], usage.get(row.id, 0))


def _chunking(strategy: bodies.ChunkingStrategy | None) -> dict[str, Any]:
    return strategy.model_dump(exclude_none=True) if strategy is not None else {"type": "auto"}


@router.post("/v1/vector_stores")
async def create_store(request: Request, principal: Principal = WRITE) -> Response:
    knowledge = knowledge_of(request)
    body: bodies.CreateStore = await _body(request, bodies.CreateStore)
    try:
        row = await knowledge.create_store(
            principal.tenant,
            body.file_ids,
            _chunking(body.chunking_strategy),
            name=body.name,
            description=body.description,
            metadata=body.metadata,
            expires_after=body.expires_after,
        )
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse(await _store_json(knowledge, row))


@router.get("/v1/vector_stores")
async def list_stores(
    request: Request,
    limit: int = 20,
    after: str | None = None,
    before: str | None = None,
    order: str = "desc",
    principal: Principal = READ,
) -> Response:
    knowledge = knowledge_of(request)
    rows = list(await knowledge.store.list_stores(principal.tenant))
    if order == "asc":
        rows.reverse()
    counts = await knowledge.store.file_counts([r.id for r in rows])
    usage = await knowledge.store.usage_bytes([r.id for r in rows])
    items = [store_object(r, counts[r.id], usage.get(r.id, 0)) for r in rows]
    return OrjsonResponse(list_page(items, max(1, min(limit, 100)), after, before))


@router.get("/v1/vector_stores/{store_id}")
async def get_store(store_id: str, request: Request, principal: Principal = READ) -> Response:
    knowledge = knowledge_of(request)
    try:
        row = await knowledge.vector_store(principal.tenant, store_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse(await _store_json(knowledge, row))


@router.post("/v1/vector_stores/{store_id}")
async def update_store(store_id: str, request: Request, principal: Principal = WRITE) -> Response:
    knowledge = knowledge_of(request)
    body: bodies.UpdateStore = await _body(request, bodies.UpdateStore)
    row = await knowledge.store.update_store(
        principal.tenant, store_id, **body.model_dump(exclude_unset=True)
    )
    if row is None:
        raise not_found(NotFound("vector_store", store_id))
    return OrjsonResponse(await _store_json(knowledge, row))


@router.delete("/v1/vector_stores/{store_id}")
async def delete_store(store_id: str, request: Request, principal: Principal = WRITE) -> Response:
    try:
        await knowledge_of(request).delete_store(principal.tenant, store_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse({"id": store_id, "object": "vector_store.deleted", "deleted": True})


# ---------------------------------------------------------------------- files in a store


def _file_response(knowledge: KnowledgeService, row: Any) -> Response:
    headers = {"openai-poll-after-ms": POLL_AFTER_MS} if row.status == "in_progress" else None
    return OrjsonResponse(store_file_object(row, knowledge.config), headers=headers)


@router.post("/v1/vector_stores/{store_id}/files")
async def attach_file(store_id: str, request: Request, principal: Principal = WRITE) -> Response:
    knowledge = knowledge_of(request)
    body: bodies.AttachFile = await _body(request, bodies.AttachFile)
    try:
        row = await knowledge.attach(
            principal.tenant, store_id, body.file_id, body.attributes or {}, _chunking(body.chunking_strategy)
        )
    except NotFound as exc:
        raise not_found(exc) from None
    return _file_response(knowledge, row)


@router.get("/v1/vector_stores/{store_id}/files")
async def list_store_files(
    store_id: str,
    request: Request,
    limit: int = 20,
    after: str | None = None,
    before: str | None = None,
    order: str = "desc",
    filter: str | None = None,
    principal: Principal = READ,
) -> Response:
    knowledge = knowledge_of(request)
    try:
        await knowledge.vector_store(principal.tenant, store_id)
    except NotFound as exc:
        raise not_found(exc) from None
    rows = [r for r, _ in await knowledge.store.list_store_files(principal.tenant, store_id, filter)]
    if order == "asc":
        rows.reverse()
    items = [store_file_object(r, knowledge.config) for r in rows]
    return OrjsonResponse(list_page(items, max(1, min(limit, 100)), after, before))


@router.get("/v1/vector_stores/{store_id}/files/{file_id}")
async def get_store_file(
    store_id: str, file_id: str, request: Request, principal: Principal = READ
) -> Response:
    knowledge = knowledge_of(request)
    try:
        row = await knowledge.store_file(principal.tenant, store_id, file_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return _file_response(knowledge, row)


@router.post("/v1/vector_stores/{store_id}/files/{file_id}")
async def update_store_file(
    store_id: str, file_id: str, request: Request, principal: Principal = WRITE
) -> Response:
    knowledge = knowledge_of(request)
    body: bodies.UpdateAttributes = await _body(request, bodies.UpdateAttributes)
    try:
        await knowledge.store_file(principal.tenant, store_id, file_id)
    except NotFound as exc:
        raise not_found(exc) from None
    row = await knowledge.store.update_attributes(principal.tenant, store_id, file_id, body.attributes or {})
    if row is None:
        raise not_found(NotFound("vector_store.file", file_id))
    return _file_response(knowledge, row)


@router.delete("/v1/vector_stores/{store_id}/files/{file_id}")
async def detach_file(
    store_id: str, file_id: str, request: Request, principal: Principal = WRITE
) -> Response:
    try:
        await knowledge_of(request).detach(principal.tenant, store_id, file_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})


@router.post("/v1/vector_stores/{store_id}/search")
async def search_store(store_id: str, request: Request, principal: Principal = READ) -> Response:
    knowledge = knowledge_of(request)
    body: bodies.Search = await _body(request, bodies.Search)
    options = body.ranking_options or bodies.RankingOptions()
    try:
        result = await knowledge.search(
            principal.tenant,
            [store_id],
            body.text(),
            max_results=body.max_num_results,
            filters=body.filters,
            score_threshold=options.score_threshold,
            rerank=options.ranker != "none",
            parent=get_context(request),
        )
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse(search_page(body.text(), result))
