"""``/v1/files``: upload (multipart ``file`` + ``purpose``), list, get, content, delete.

Thin: the body is read by the shared multipart reader (gateway/schemas.py ``read_form``: size
counted as it arrives, 413 past the limit, idle timeout from gateway/inputs/body.py); the file is
stored as is and checked when a vector store ingests it (a bad document fails that ingestion with
a clear ``last_error``; nothing else is touched).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from gateway.auth import Principal, require_scope
from gateway.errors import APIError
from gateway.jsonresponse import OrjsonResponse
from gateway.knowledge.api import knowledge_of, not_found, quota_exceeded
from gateway.knowledge.objects import file_object, list_page
from gateway.knowledge.service import NotFound, QuotaExceeded
from gateway.schemas import read_form, too_large

router = APIRouter()

PURPOSES = frozenset({"assistants", "user_data"})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def _filename(upload: UploadFile) -> str:
    name = _UNSAFE.sub("_", PurePosixPath((upload.filename or "").replace("\\", "/")).name).strip()
    if not name:
        raise APIError(400, "The uploaded file has no file name.", param="file", code="missing_filename")
    return name[:255]


@router.post("/v1/files")
async def upload_file(request: Request, principal: Principal = require_scope("knowledge:write")) -> Response:
    knowledge = knowledge_of(request)
    limit = min(request.app.state.services.settings.max_upload_bytes, knowledge.config.max_file_bytes)
    form = await read_form(request, limit, "a 'file' field and a 'purpose' field", max_files=1)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "The multipart field 'file' (a file) is required.", param="file")
        purpose = form.get("purpose")
        if purpose not in PURPOSES:
            raise APIError(
                400,
                f"purpose must be one of {', '.join(sorted(PURPOSES))}.",
                param="purpose",
                code="invalid_purpose",
            )
        name = _filename(upload)
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise too_large(limit)
    finally:
        await form.close()
    try:
        row = await knowledge.upload(principal.tenant, name, str(purpose), data)
    except QuotaExceeded as exc:
        raise quota_exceeded(exc) from None
    return OrjsonResponse(file_object(row))


@router.get("/v1/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = 100,
    after: str | None = None,
    principal: Principal = require_scope("knowledge:read"),
) -> Response:
    rows = await knowledge_of(request).store.list_files(principal.tenant, purpose)
    return OrjsonResponse(list_page([file_object(r) for r in rows], max(1, min(limit, 10000)), after, None))


@router.get("/v1/files/{file_id}")
async def get_file(
    file_id: str, request: Request, principal: Principal = require_scope("knowledge:read")
) -> Response:
    try:
        return OrjsonResponse(file_object(await knowledge_of(request).file(principal.tenant, file_id)))
    except NotFound as exc:
        raise not_found(exc) from None


@router.get("/v1/files/{file_id}/content")
async def file_content(
    file_id: str, request: Request, principal: Principal = require_scope("knowledge:read")
) -> Response:
    knowledge = knowledge_of(request)
    try:
        await knowledge.file(principal.tenant, file_id)
    except NotFound as exc:
        raise not_found(exc) from None
    data = knowledge.store.read_blob(principal.tenant, file_id)
    return Response(data, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(
    file_id: str, request: Request, principal: Principal = require_scope("knowledge:write")
) -> Response:
    try:
        await knowledge_of(request).delete_file(principal.tenant, file_id)
    except NotFound as exc:
        raise not_found(exc) from None
    return OrjsonResponse({"id": file_id, "object": "file", "deleted": True})
