"""OpenAI's JSON objects for files, vector stores, their files and search pages.

Shapes follow the installed openai SDK's types (openai/types/file_object.py, vector_store.py,
vector_stores/vector_store_file.py, vector_store_search_response.py), so the stock client parses
them; talkgate's additions are extra keys, which the SDK keeps (``extra="allow"``).
"""

from __future__ import annotations

from typing import Any

from gateway.db.knowledge import KnowledgeFile, VectorStore, VectorStoreFile
from gateway.knowledge.search import Hit, SearchResult

DEFAULT_CHUNKING = {"type": "auto"}


def file_object(row: KnowledgeFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def store_object(row: VectorStore, counts: dict[str, int], usage_bytes: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "vector_store",
        "created_at": row.created_at,
        "name": row.name,
        "description": row.description,
        "usage_bytes": usage_bytes,
        "file_counts": {
            k: counts.get(k, 0) for k in ("in_progress", "completed", "failed", "cancelled", "total")
        },
        "status": "in_progress" if counts.get("in_progress") or _reembedding(row) else "completed",
        "expires_after": row.expires_after,
        "expires_at": None,
        "last_active_at": row.last_active_at,
        "metadata": row.meta or {},
        "embedding_model": row.embedding_model,  # talkgate: the vector space of its chunks, or null
        # talkgate: re-embedding into the current space (status, model, done, total, error), or null
        "reembedding": row.reembed,
    }


def _reembedding(row: VectorStore) -> bool:
    return bool(row.reembed) and row.reembed.get("status") == "in_progress"


def chunking_object(chunking: dict[str, Any], config: Any) -> dict[str, Any]:
    """What a file was (or will be) chunked with: always reported as ``static`` with real sizes."""
    static = chunking.get("static") if chunking.get("type") == "static" else None
    if isinstance(static, dict):
        return {"type": "static", "static": dict(static)}
    return {
        "type": "static",
        "static": {
            "max_chunk_size_tokens": config.chunk_tokens,
            "chunk_overlap_tokens": config.chunk_overlap,
        },
    }


def store_file_object(row: VectorStoreFile, config: Any) -> dict[str, Any]:
    return {
        "id": row.file_id,
        "object": "vector_store.file",
        "created_at": row.created_at,
        "vector_store_id": row.store_id,
        "status": row.status,
        "last_error": row.last_error,
        "usage_bytes": row.usage_bytes,
        "attributes": row.attributes or {},
        "chunking_strategy": chunking_object(row.chunking or {}, config),
        "chunk_count": row.chunk_count,  # talkgate
    }


def hit_object(hit: Hit) -> dict[str, Any]:
    return {
        "file_id": hit.file_id,
        "filename": hit.filename,
        "score": hit.score,
        "attributes": hit.attributes,
        "content": [{"type": "text", "text": hit.text}],
        # talkgate: where the passage is, for citations
        "chunk": {"id": hit.chunk_id, "index": hit.ordinal, "heading": hit.heading, "page": hit.page},
        "vector_store_id": hit.store_id,
        "support": hit.support,
    }


def search_page(query: str, result: SearchResult) -> dict[str, Any]:
    return {
        "object": "vector_store.search_results.page",
        "search_query": [query],
        "data": [hit_object(h) for h in result.hits],
        "has_more": False,
        "next_page": None,
        "search_mode": result.mode,  # talkgate: "hybrid" or "lexical" (degraded or lexical store)
        "reranked": result.reranked,
    }


def list_page(
    items: list[dict[str, Any]], limit: int, after: str | None, before: str | None
) -> dict[str, Any]:
    """OpenAI's cursor page over an already ordered list (``after``/``before`` are item ids)."""
    ids = [i["id"] for i in items]
    if after in ids:
        items = items[ids.index(after) + 1 :]
    elif before in ids:
        items = items[: ids.index(before)]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
