"""What the files and vector-store routes share: the service lookup and the refusals as OpenAI errors."""

from __future__ import annotations

from typing import Any

from gateway.errors import APIError
from gateway.inputs.echo import echo
from gateway.knowledge.service import KnowledgeService, NotFound, QuotaExceeded

_NOUNS = {
    "file": "file",
    "vector_store": "vector store",
    "vector_store.file": "file in this vector store",
    "vector_store.file_batch": "file batch in this vector store",
}


def not_found(exc: NotFound) -> APIError:
    """The same 404 for an id that never existed and for another tenant's."""
    return APIError(
        404,
        f"No {_NOUNS.get(exc.kind, exc.kind)} found with id '{echo(exc.item_id)}'.",
        type="not_found_error",
        code=f"{exc.kind.replace('.', '_')}_not_found",
    )


def quota_exceeded(exc: QuotaExceeded) -> APIError:
    return APIError(
        403,
        f"This upload of {exc.size} bytes would exceed the tenant's knowledge-base storage quota "
        f"({exc.used} of {exc.limit} bytes used); delete files or ask for a larger quota.",
        type="insufficient_quota",
        code="storage_quota_exceeded",
    )


def knowledge_of(request: Any) -> KnowledgeService:
    service = request.app.state.services.knowledge
    if service is None:
        raise APIError(503, "The knowledge base is not enabled on this gateway.", code="knowledge_disabled")
    return service
