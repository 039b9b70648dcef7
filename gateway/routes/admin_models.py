"""Admin: hot swap and rollback of the model behind a capability.

``POST /admin/models/{capability}/swap`` answers 202 with a swap id at once (``?wait=true``:
200 once finished); ``GET /admin/models/{capability}`` shows the serving version, in-flight
calls per provider instance and the swap history; ``POST .../rollback`` goes back one version.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from gateway.auth import Principal, require_scope
from gateway.errors import APIError
from gateway.hotswap import SwapError, SwapManager, SwapRecord

router = APIRouter(prefix="/admin/models", tags=["admin"])

#: ?wait=true waits at most this long before answering 202 anyway.
WAIT_LIMIT_S = 120.0


def _manager(request: Request) -> SwapManager:
    manager = getattr(request.app.state.services, "swaps", None)
    if manager is None:
        raise APIError(503, "Model hot swap is not enabled in this build.", type="service_unavailable")
    return manager


def _who(request: Request, principal: Principal) -> str:
    """The admin-scoped key's id, or "admin-key" for TALKGATE_ADMIN_KEY itself (admin is never open)."""
    return principal.key_id or "admin-key"


async def _answer(record: SwapRecord, wait: bool) -> JSONResponse:
    if wait and record.task is not None:
        done, _ = await asyncio.wait({record.task}, timeout=WAIT_LIMIT_S)
        if done:
            return JSONResponse(record.public(), status_code=200)
    return JSONResponse(record.public(), status_code=202)


def _client_error(exc: SwapError) -> APIError:
    kind = {404: "not_found_error", 409: "conflict_error"}.get(exc.status, "invalid_request_error")
    return APIError(exc.status, str(exc), type=kind)


@router.get("/{capability}")
async def model_status(
    capability: str, request: Request, principal: Principal = require_scope("admin")
) -> Any:
    try:
        return _manager(request).status(capability)
    except SwapError as exc:
        raise _client_error(exc) from None


@router.get("/{capability}/swaps/{swap_id}")
async def swap_status(
    capability: str, swap_id: str, request: Request, principal: Principal = require_scope("admin")
) -> Any:
    record = _manager(request).get(capability, swap_id)
    if record is None:
        raise APIError(404, f"No swap '{swap_id}' on {capability}.", type="not_found_error")
    return record.public()


@router.post("/{capability}/swap")
async def swap(
    capability: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    wait: bool = False,
    principal: Principal = require_scope("admin"),
) -> JSONResponse:
    try:
        record = _manager(request).swap(capability, body, _who(request, principal))
    except SwapError as exc:
        raise _client_error(exc) from None
    return await _answer(record, wait)


@router.post("/{capability}/rollback")
async def rollback(
    capability: str, request: Request, wait: bool = False, principal: Principal = require_scope("admin")
) -> JSONResponse:
    try:
        record = _manager(request).rollback(capability, _who(request, principal))
    except SwapError as exc:
        raise _client_error(exc) from None
    return await _answer(record, wait)
