"""``POST /v1/realtime/calls``: WebRTC signalling for a live call, the way OpenAI's endpoint does it.

The body is the browser's SDP offer (``application/sdp``), or OpenAI's multipart form with an
``sdp`` part and a ``session`` part (JSON session config), or JSON ``{"sdp", "session"}``. The
answer is ``201`` with the SDP answer (``application/sdp``) and ``Location:
/v1/realtime/calls/<call id>``. ``avatar_id`` (query, or a field of the session config) adds
the avatar video track; without it the call is voice only. ``model`` picks the chat model as
on ``/v1/realtime``. ``POST /v1/realtime/calls/{id}/hangup`` ends a call.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from gateway.auth import Principal, authenticate
from gateway.errors import APIError, echo_limit, unknown_model_error
from gateway.inputs.echo import echo
from gateway.realtime.account import SCOPE, SessionAccount
from gateway.realtime.events import new_id
from gateway.realtime.route import chat_model_for
from gateway.schemas import read_body, read_form
from policies.routing import UnknownModelError

log = logging.getLogger("talkgate.webrtc")
router = APIRouter()

#: An SDP offer is a few kilobytes; a session config a few more.
MAX_OFFER_BYTES = 64 * 1024


async def _caller(request: Request) -> Principal:
    """The caller (401/403 before the body is read), as on /v1/realtime."""
    return await authenticate(request, SCOPE)


_caller.talkgate_scope = SCOPE  # type: ignore[attr-defined]  # the route audit in tests reads it


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


async def _offer_of(request: Request) -> tuple[str, dict[str, Any]]:
    """(SDP offer, session config) from any of the three body shapes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: Any = {}
    if content_type == "multipart/form-data":
        form = await read_form(request, MAX_OFFER_BYTES, "an 'sdp' part and an optional 'session' part")
        try:
            parts: dict[str, bytes | str] = {}
            for key, value in form.multi_items():
                if key in ("sdp", "session"):
                    parts[key] = (
                        await value.read(MAX_OFFER_BYTES + 1) if isinstance(value, UploadFile) else value
                    )
        finally:
            await form.close()
        raw_sdp = parts.get("sdp")
        sdp = raw_sdp.decode("utf-8", "replace") if isinstance(raw_sdp, bytes) else raw_sdp
        if "session" in parts:
            session = _json(parts["session"], "session")
    elif content_type == "application/json":
        body = _json(await read_body(request, MAX_OFFER_BYTES), "body")
        if not isinstance(body, dict):
            raise _bad("The JSON body must be an object with 'sdp' and optional 'session'.")
        sdp, session = body.get("sdp"), body.get("session", {})
    elif content_type in ("application/sdp", "text/plain", ""):
        sdp = (await read_body(request, MAX_OFFER_BYTES)).decode("utf-8", "replace")
    else:
        raise APIError(
            415,
            f"Send the SDP offer as application/sdp (or multipart 'sdp' + 'session'), not '{echo(content_type)}'.",
            code="invalid_content_type",
        )
    if not isinstance(sdp, str) or not sdp.lstrip().startswith("v=0"):
        raise _bad("The body is not an SDP offer (it must start with 'v=0').", "sdp", "invalid_sdp")
    if session is None:
        session = {}
    if not isinstance(session, dict):
        raise _bad("'session' must be a JSON object.", "session")
    return sdp, session


def _json(raw: bytes | str, param: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"'{param}' is not valid JSON: {exc}", param, "invalid_json") from None


@router.post("/v1/realtime/calls", status_code=201)
async def create_call(request: Request, caller: Principal = Depends(_caller)) -> Response:
    services = request.app.state.services
    sdp, session = await _offer_of(request)
    model = request.query_params.get("model") or session.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string.", "session.model")
    try:
        chat_model = chat_model_for(services.router, model)
    except UnknownModelError as exc:
        raise unknown_model_error(exc, echo_limit(request)) from None
    avatar_id = request.query_params.get("avatar_id") or session.pop("avatar_id", None)
    session.pop("model", None)
    calls = services.calls
    if calls.full():
        raise APIError(
            503,
            f"This gateway holds its limit of {calls.max_calls} live calls; try again later.",
            type="server_error",
            code="too_many_calls",
            headers={"retry-after": "10"},
        )
    face = None
    if avatar_id is not None:
        face = await anyio.to_thread.run_sync(_face, services, str(avatar_id), caller.tenant)
    from gateway.webrtc.peer import LiveCall

    # Admission as for a /v1/realtime WebSocket: quotas, rpm and the key's concurrency slot, held
    # for the call's life (released when it closes); a refusal is this request's 429.
    session_id = new_id("sess")
    account = SessionAccount(services, caller, session_id)
    await account.open()
    call = LiveCall(
        services,
        model=model or "",
        chat_model=chat_model,
        face=face,
        session_config=session,
        account=account,
        session_id=session_id,
        tenant=caller.tenant or "default",
    )
    try:
        answer = await call.answer(sdp)
    except ValueError as exc:  # aiortc's word on an offer it cannot use
        await call.close()
        raise _bad(f"The SDP offer was refused: {str(exc)[:200]}", "sdp", "invalid_sdp") from None
    except Exception:
        await call.close()
        raise
    call.tenant = caller.tenant
    calls.add(call)
    log.info("call %s opened (tenant %s, avatar %s)", call.id, caller.tenant, avatar_id or "-")
    return Response(
        content=answer,
        status_code=201,
        media_type="application/sdp",
        headers={"location": f"/v1/realtime/calls/{call.id}"},
    )


def _face(services: Any, avatar_id: str, tenant: str) -> Any:
    from lipsync.live import LiveFace

    avatar = services.avatars.get(avatar_id, tenant) if services.avatars.valid_id(avatar_id) else None
    if avatar is None:
        raise APIError(
            404, f"No avatar with id '{echo(avatar_id)}'", type="not_found_error", code="avatar_not_found"
        )
    if services.settings.wav2lip_checkpoint is not None:
        log.info("live calls use the procedural renderer: Wav2Lip is not wired to the live path yet")
    cfg = services.settings.webrtc
    return LiveFace(avatar.image, avatar.box, fps=cfg.fps, max_side=cfg.max_side)


@router.post("/v1/realtime/calls/{call_id}/hangup")
async def hangup(call_id: str, request: Request, caller: Principal = Depends(_caller)) -> Response:
    call = request.app.state.services.calls.calls.get(call_id)
    if call is None or call.tenant != caller.tenant:
        raise APIError(
            404, f"No live call with id '{echo(call_id)}'", type="not_found_error", code="call_not_found"
        )
    await call.close()
    return Response(status_code=200)
