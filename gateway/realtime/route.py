"""``GET /v1/realtime?model=...``: the WebSocket endpoint of the realtime protocol.

Authentication happens before the upgrade is accepted, so a bad key gets an HTTP 401/403 with
the usual ``{"error": ...}`` body (the SDK raises on it) rather than an open socket. Sends are
serialised by a lock and shielded from cancellation: the response task and the receive loop
both send, and a cancelled response must not leave half a frame on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from gateway.auth import Principal, authenticate
from gateway.errors import APIError, echo_limit, unknown_model_error
from gateway.realtime.session import RealtimeSession
from policies.routing import UnknownModelError

log = logging.getLogger("talkgate.realtime")
router = APIRouter()

#: Scope checked for /v1/realtime; a dedicated "realtime" scope is future work.
SCOPE = "chat"
#: Model names of OpenAI's realtime models: served by the default chat chain.
REALTIME_PREFIXES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")


async def _caller(websocket: WebSocket) -> Principal | APIError:
    """The caller, or the refusal to send as the upgrade's HTTP answer."""
    try:
        return await authenticate(websocket, SCOPE)
    except APIError as exc:
        return exc


_caller.talkgate_scope = SCOPE  # type: ignore[attr-defined]  # the route audit in tests reads it


def chat_model_for(router_: Any, model: str | None) -> str:
    """The chat model behind the requested realtime model ("" = the default chat chain)."""
    if not model or model == "default" or model.startswith(REALTIME_PREFIXES):
        return ""
    router_.resolve("chat", model)  # raises UnknownModelError
    return model


async def _refuse(websocket: WebSocket, error: APIError) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(error.body(), status_code=error.status))
    else:
        await websocket.close(code=1008, reason=error.message[:120])


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, caller: Principal | APIError = Depends(_caller)) -> None:
    if isinstance(caller, APIError):
        await _refuse(websocket, caller)
        return
    services = websocket.app.state.services
    model = websocket.query_params.get("model")
    try:
        chat_model = chat_model_for(services.router, model)
    except UnknownModelError as exc:
        await _refuse(websocket, unknown_model_error(exc, echo_limit(websocket)))  # the name cut short
        return
    await websocket.accept()
    lock = asyncio.Lock()
    open_ = True

    async def send(event: dict[str, Any]) -> None:
        nonlocal open_
        if not open_:
            return
        data = orjson.dumps(event).decode()

        async def locked() -> None:
            async with lock:
                await websocket.send_text(data)

        try:
            await asyncio.shield(locked())
        except (WebSocketDisconnect, RuntimeError, OSError):
            open_ = False  # the client is gone; the receive loop ends the session

    session = RealtimeSession(send, services.router, services.settings, model or "", chat_model)
    log.info("realtime session %s opened (tenant %s)", session.config.id, caller.tenant)
    try:
        await session.start()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") if message.get("text") is not None else message.get("bytes")
            if raw is not None:
                await session.handle(raw)
    except WebSocketDisconnect:
        pass
    finally:
        open_ = False
        await session.close()
        log.info("realtime session %s closed", session.config.id)
