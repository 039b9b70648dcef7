"""``GET /v1/realtime?model=...``: the WebSocket endpoint of the realtime protocol.

Authentication and admission (scope ``realtime``, quotas, the key's concurrency slot, held for
the session's life) happen before the upgrade is accepted, so a refused key gets an HTTP
401/403/429 with the usual ``{"error": ...}`` body (the SDK raises on it) rather than an open
socket. Browsers, which cannot set headers on a WebSocket, send the key as the subprotocol
``openai-insecure-api-key.<key>`` (gateway/auth.py). Frame limits (size, rate, idleness,
session length) are the FrameGuard's, shared with the WebRTC data channel.
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
from gateway.realtime.account import SCOPE, SessionAccount
from gateway.realtime.events import error_event, new_id
from gateway.realtime.guard import FrameGuard
from gateway.realtime.session import RealtimeSession
from gateway.voices.use import store_for
from policies.routing import UnknownModelError

log = logging.getLogger("talkgate.realtime")
router = APIRouter()

#: Model names of OpenAI's realtime models: served by the default chat chain.
REALTIME_PREFIXES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")
#: Subprotocol a browser offers next to its key (OpenAI's protocol); echoed when offered.
SUBPROTOCOL = "realtime"


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
        response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=error.message[:120])


def _subprotocol(websocket: WebSocket) -> str | None:
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, caller: Principal | APIError = Depends(_caller)) -> None:
    if isinstance(caller, APIError):
        await _refuse(websocket, caller)
        return
    services = websocket.app.state.services
    metrics = services.realtime_metrics
    model = websocket.query_params.get("model")
    try:
        chat_model = chat_model_for(services.router, model)
    except UnknownModelError as exc:
        await _refuse(websocket, unknown_model_error(exc, echo_limit(websocket)))  # the name cut short
        return
    session_id = new_id("sess")
    account = SessionAccount(services, caller, session_id)
    try:
        await account.open()
    except APIError as exc:
        if metrics is not None:
            metrics.sessions.labels("refused").inc()
        await _refuse(websocket, exc)
        return
    try:
        await websocket.accept(subprotocol=_subprotocol(websocket))
    except BaseException:
        await account.close()
        raise
    transport = _Transport(websocket)
    session = RealtimeSession(
        transport.send,
        services.router,
        services.settings,
        model or "",
        chat_model,
        account=account,
        metrics=metrics,
        session_id=session_id,
        vad_scorer=services.vad_scorer,
        retriever=services.retriever,
        tenant=caller.tenant or "default",
        voices=store_for(services),
    )
    outcome = "closed"
    if metrics is not None:
        metrics.active.inc()
    log.info("realtime session %s opened (tenant %s)", session_id, caller.tenant)
    try:
        await session.start()
        outcome = await _serve(websocket, session, transport, FrameGuard(services.settings.realtime))
    except WebSocketDisconnect:
        pass
    finally:
        transport.open = False
        await session.close()
        await account.close()
        if metrics is not None:
            metrics.active.dec()
            metrics.sessions.labels(outcome).inc()
        log.info("realtime session %s closed (%s)", session_id, outcome)


class _Transport:
    """Serialised sends: the response task and the receive loop both send, and a cancelled
    response must not leave half a frame on the wire (hence the shield)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.open = True

    async def send(self, event: dict[str, Any]) -> None:
        if not self.open:
            return
        data = orjson.dumps(event).decode()

        async def locked() -> None:
            async with self.lock:
                await self.websocket.send_text(data)

        try:
            await asyncio.shield(locked())
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.open = False  # the client is gone; the receive loop ends the session


async def _serve(
    websocket: WebSocket, session: RealtimeSession, transport: _Transport, guard: FrameGuard
) -> str:
    """The receive loop; returns how the session ended."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=max(0.01, guard.wait_s()))
        except TimeoutError:
            reason = guard.expired()
            if reason is None:
                continue
            text = (
                f"The session reached its maximum length ({guard.config.max_session_s:g} s)."
                if reason == "max_session"
                else f"The session was idle for {guard.config.idle_timeout_s:g} s."
            )
            code = "session_expired" if reason == "max_session" else "session_idle_timeout"
            await transport.send(error_event(text, code))
            await websocket.close(code=1000, reason=text[:120])
            return "timed_out"
        if message["type"] == "websocket.disconnect":
            return "closed"
        raw = message.get("text") if message.get("text") is not None else message.get("bytes")
        if raw is None:
            continue
        refusal = guard.check(len(raw))
        if refusal is not None:
            await transport.send(refusal)
        else:
            await session.handle(raw)
        if guard.abusive(session.refused):
            await websocket.close(code=1008, reason="too many invalid events")
            return "limit"
