"""WebSocket ``/api-ws/v1/inference`` of the simulator: key check, faults, and its canned tasks.

The task protocol itself (run/continue/finish-task, task_id rules, frame limits, idle timeouts)
is ``gateway.dashscope.ws_task``, shared with the gateway's front door. This module adds what
only a simulated cloud has: the request log, injected faults (a refused handshake, a hang, a
latency, a task-failed, a connection cut after N frames) and the deterministic ASR (``ws_asr``),
CosyVoice and Sambert (``ws_tts``) tasks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.dashscope.bodies import bearer_key
from gateway.dashscope.errors import INVALID_KEY
from gateway.dashscope.ws_task import (
    Conn,
    Task,
    TaskFailed,
    TaskLoop,
    check_run_task,
    close_quietly,
    deny_handshake,
    fail_internal,
    run_task_payload,
    task_parameters,
)
from gateway.sim.http_common import HANG_MAX_S, apply_fault_latency, mark_deliberate_drop
from gateway.sim.models import SAMBERT_PREFIXES, WS_ASR_PREFIXES, WS_TTS_PREFIXES, model_not_found_message
from gateway.sim.state import Fault, SimState
from gateway.sim.ws_asr import AsrTask
from gateway.sim.ws_tts import CosyVoiceTask, SambertTask

log = logging.getLogger(__name__)
DRAIN_BEFORE_DROP_S = 0.1
#: The server's WebSocket layer (``run_simulator`` passes it to uvicorn) cuts any message above this
#: before buffering it. uvicorn then closes the socket at once, so the client usually sees a reset
#: rather than the 1009 close frame; the limit is therefore well above any real message, so that
#: oversized ones (up to ``ws_task.MAX_TEXT_FRAME_CHARS``) still get the clean task-failed + 1009.
WS_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class Dropped(Exception):
    """The connection was ended by an injected fault; ``abrupt`` means no close frame."""

    def __init__(self, abrupt: bool) -> None:
        super().__init__("simulated drop")
        self.abrupt = abrupt


class FaultConn(Conn):
    """The task envelope plus a fault's ``cut_after`` budget of events and audio frames."""

    def __init__(self, websocket: WebSocket) -> None:
        super().__init__(websocket)
        self.frames = 0
        self.cut_after: int | None = None
        self.cut_fault: Fault | None = None

    def arm(self, fault: Fault | None) -> None:
        self.frames = 0
        self.cut_after = fault.cut_after if fault else None
        self.cut_fault = fault

    async def before_send(self) -> None:
        if self.cut_after is None or self.frames < self.cut_after:
            self.frames += 1
            return
        fault = self.cut_fault
        if fault is not None and fault.status is not None:
            await self.fail(fault.error_code, fault.error_message)
            raise Dropped(abrupt=False)
        raise Dropped(abrupt=True)


async def _reject(websocket: WebSocket, status: int, code: str, message: str) -> None:
    await deny_handshake(websocket, status, code, message)
    mark_deliberate_drop()  # uvicorn logs a denial as an unfinished handshake


async def inference_ws(websocket: WebSocket) -> None:
    state: SimState = websocket.app.state.sim
    if not state.config.key_ok(bearer_key(websocket.headers)):
        item = state.log.record("ws", websocket.url.path, None, True, None)
        item["status"] = 401
        await _reject(websocket, 401, *INVALID_KEY)
        return
    fault = state.faults.take("ws", None, handshake=True)
    if fault is not None:
        service = fault.service if fault.service != "*" else "ws"
        item = state.log.record(service, websocket.url.path, None, True, None, fault=fault)
        item["status"] = fault.status
        await _reject(websocket, fault.status or 401, fault.error_code, fault.error_message)
        return
    await websocket.accept()
    conn = FaultConn(websocket)

    async def start(data: dict[str, Any], conn_: Conn) -> Task | None:
        return await _run_task(data, state, conn)

    loop = TaskLoop(websocket, conn, start, task_idle_s=state.config.ws_idle_timeout_s, hang_s=HANG_MAX_S)
    try:
        await loop.run()
    except Dropped as drop:
        if not drop.abrupt:
            await close_quietly(websocket)
            return
        # Abrupt: return without a close frame and uvicorn closes the socket. Read what the client
        # already sent first, or the close turns into a TCP reset that can discard frames the
        # client has not read yet (a reset makes the test outcome timing-dependent).
        await _drain(websocket, DRAIN_BEFORE_DROP_S)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("simulator WebSocket task failed unexpectedly")
        await fail_internal(websocket, conn)


async def _drain(websocket: WebSocket, seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            message = await asyncio.wait_for(websocket.receive(), timeout=left)
            if message["type"] == "websocket.disconnect":
                return
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        pass


async def _run_task(data: dict[str, Any], state: SimState, conn: FaultConn) -> Task | None:
    """Validate a run-task, record it, apply any fault, send task-started and build the task;
    None leaves the connection hanging (a ``hang`` fault)."""
    payload, model, service = run_task_payload(data)
    item = state.log.record(service, "/api-ws/v1/inference", model, True, data, task_id=conn.task_id)
    item.update({"audio_bytes": 0} if service == "asr" else {"text_chars": 0})
    try:
        check_run_task(conn, payload, model, service)
    except TaskFailed:
        item["status"] = 400
        raise
    assert model is not None
    streaming = data["header"].get("streaming", "duplex")
    if service == "asr" and model.startswith(WS_ASR_PREFIXES):
        factory: Any = AsrTask
    elif service == "tts" and model.startswith(WS_TTS_PREFIXES) and streaming == "duplex":
        factory = CosyVoiceTask
    elif service == "tts" and model.startswith(SAMBERT_PREFIXES):
        factory = SambertTask
    else:
        item["status"] = 404
        raise TaskFailed("ModelNotFound", model_not_found_message(model))
    fault = state.faults.take(service, model)
    if fault is not None:
        item["fault"] = fault.id
        if fault.hang:
            item["status"] = 0
            return None
        await apply_fault_latency(fault)
        if fault.status is not None and fault.cut_after is None:
            item["status"] = fault.status
            raise TaskFailed(fault.error_code, fault.error_message)
    try:
        task = factory(conn, state, payload, task_parameters(payload), item)
    except TaskFailed:
        item["status"] = 400
        raise
    conn.arm(fault)
    item["status"] = 200
    await conn.event("task-started", {})
    return task
