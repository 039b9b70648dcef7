"""``POST /v1/avatars`` (multipart ``image``, optional ``face_index``), ``GET`` and ``DELETE``.

The face check runs at upload, so a portrait that cannot be animated is refused here
(422 with the reason) instead of failing later inside a talk request.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from gateway.auth import Principal, require_scope
from gateway.errors import APIError
from gateway.inputs.echo import echo
from gateway.inputs.images import check_image
from gateway.schemas import read_form, too_large
from gateway.services import Services
from lipsync.errors import FaceError, ImageError

router = APIRouter()


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers
    )


def lipsync_error(exc: FaceError | ImageError, param: str = "image") -> APIError:
    """FaceError → 422 (the portrait is valid but cannot be animated), ImageError → 400."""
    if isinstance(exc, FaceError):
        return APIError(422, exc.message, code=exc.reason, param=param)
    return APIError(400, exc.message, code=exc.reason, param=param)


def parse_face_index(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise APIError(400, "face_index must be an integer", param="face_index") from None
    if index < 0:
        raise APIError(400, "face_index must be 0 or more", param="face_index")
    return index


async def read_image_field(upload: Any, limit: int, field: str = "image") -> bytes:
    if not isinstance(upload, UploadFile):
        raise APIError(400, f"'{field}' must be an uploaded image file", param=field, code="missing_image")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    if not data:
        raise APIError(400, f"'{field}' is empty", param=field, code="bad_image")
    return data


def _not_found(avatar_id: str) -> APIError:
    return APIError(
        404, f"No avatar with id '{echo(avatar_id)}'", type="not_found_error", code="avatar_not_found"
    )


@router.post("/v1/avatars", status_code=201)
async def create_avatar(request: Request, principal: Principal = require_scope("avatars")) -> Response:
    services: Services = request.app.state.services
    limit = services.settings.max_upload_bytes
    form = await read_form(request, limit, "an 'image' file field")
    try:
        if "image" not in form:
            raise APIError(
                400, "the multipart field 'image' is required", param="image", code="missing_image"
            )
        data = await read_image_field(form.get("image"), limit)
        face_index = parse_face_index(form.get("face_index"))
    finally:
        await form.close()
    try:
        check_image(data, services.settings.limits)  # from the header, before any decoding
        avatar = await anyio.to_thread.run_sync(services.avatars.create, data, face_index, principal.tenant)
    except (FaceError, ImageError) as exc:
        raise lipsync_error(exc) from None
    return json_response(avatar.public(), status_code=201)


@router.get("/v1/avatars/{avatar_id}")
async def get_avatar(
    avatar_id: str, request: Request, principal: Principal = require_scope("avatars")
) -> Response:
    services: Services = request.app.state.services
    avatar = await anyio.to_thread.run_sync(services.avatars.get, avatar_id, principal.tenant)
    if avatar is None:
        raise _not_found(avatar_id)
    return json_response(avatar.public())


@router.delete("/v1/avatars/{avatar_id}")
async def delete_avatar(
    avatar_id: str, request: Request, principal: Principal = require_scope("avatars")
) -> Response:
    services: Services = request.app.state.services
    if not await anyio.to_thread.run_sync(services.avatars.delete, avatar_id, principal.tenant):
        raise _not_found(avatar_id)
    return json_response({"id": avatar_id, "object": "avatar", "deleted": True})
