"""WebSocket ``/api-ws/v1/inference`` (with or without the trailing slash): the duplex task protocol.

The key is checked at the handshake (bad key → HTTP 401 on the upgrade, which the SDKs report as a
handshake failure). After that the client drives tasks with ``run-task``; each task is an ASR
(Paraformer / Fun-ASR), CosyVoice or Sambert session (``ws_asr`` / ``ws_tts``). A connection can
run several tasks one after another, each with a new task_id; a new run-task aborts the current one.

Whatever a client sends, the answer is protocol-level: a frame the task state machine cannot accept
(not JSON, no header.action, audio or continue/finish-task with no running task, a task_id other
than the running one, a reused task_id, an oversized frame) gets ``task-failed`` and then the close,
as Bailian closes after task-failed; a bug in a handler gets ``task-failed`` InternalError and close
1011. Only that connection ends; the simulator keeps serving the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.sim.http_common import (
    HANG_MAX_S,
    INVALID_KEY,
    apply_fault_latency,
    bearer_key,
    mark_deliberate_drop,
    new_request_id,
)
from gateway.sim.models import SAMBERT_PREFIXES, WS_ASR_PREFIXES, WS_TTS_PREFIXES, model_not_found_message
from gateway.sim.state import SimState
from gateway.sim.ws_asr import AsrTask
from gateway.sim.ws_conn import Conn, Dropped, Task, TaskFailed
from gateway.sim.ws_tts import CosyVoiceTask, SambertTask

log = logging.getLogger(__name__)
IDLE_WITHOUT_TASK_S = 60.0
DRAIN_BEFORE_DROP_S = 0.1
#: JSON (text) frames are small: CosyVoice allows 20,000 characters per continue-task. A larger one
#: is refused before it is parsed or kept in the request log: task-failed, then close 1009.
MAX_TEXT_FRAME_CHARS = 1024 * 1024
#: The server's WebSocket layer (``run_simulator`` passes it to uvicorn) cuts any message above this
#: before buffering it. uvicorn then closes the socket at once, so the client usually sees a reset
#: rather than the 1009 close frame; the limit is therefore well above any real message, so that
#: oversized ones (up to here) still reach ``_parse`` and get the clean task-failed + 1009 above.
WS_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_TASK_ID_CHARS = 128
#: task_ids used on one connection that a new run-task may not repeat (bounded per connection).
REMEMBERED_TASK_IDS = 1024
ACTIONS = ("run-task", "continue-task", "finish-task")


def _deny(status: int, code: str, message: str) -> Response:
    body = {"code": code, "message": message, "request_id": new_request_id()}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _reject(websocket: WebSocket, status: int, code: str, message: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_deny(status, code, message))
        mark_deliberate_drop()  # uvicorn logs a denial as an unfinished handshake
    else:  # servers without the denial extension can only refuse with 403
        await websocket.close(code=1008)


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
    conn = Conn(websocket)
    try:
        await _serve(websocket, state, conn)
    except Dropped as drop:
        if not drop.abrupt:
            await _close(websocket)
            return
        # Abrupt: return without a close frame and uvicorn closes the socket. Read what the client
        # already sent first, or the close turns into a TCP reset that can discard frames the
        # client has not read yet (a reset makes the test outcome timing-dependent).
        await _drain(websocket, DRAIN_BEFORE_DROP_S)
    except WebSocketDisconnect:
        pass
    except Exception:
        # A simulator bug must still look like a failing cloud task, not a hung or reset socket.
        log.exception("simulator WebSocket task failed unexpectedly")
        try:
            await conn.fail("InternalError", "An internal error has occured, please try again later.")
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass
        await _close(websocket, 1011, "internal error")


async def _drain(websocket: WebSocket, seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            message = await asyncio.wait_for(websocket.receive(), timeout=left)
            if message["type"] == "websocket.disconnect":
                return
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        pass


async def _close(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    try:
        await websocket.close(code=code, reason=reason or None)
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass


async def _serve(websocket: WebSocket, state: SimState, conn: Conn) -> None:
    task: Task | None = None
    hanging = False
    used_ids: deque[str] = deque(maxlen=REMEMBERED_TASK_IDS)
    while True:
        if hanging:
            timeout = HANG_MAX_S
        else:
            timeout = state.config.ws_idle_timeout_s if task is not None else IDLE_WITHOUT_TASK_S
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=timeout)
        except TimeoutError:
            if task is not None and not hanging:
                await conn.fail("CLIENT_ERROR", f"request timeout after {timeout:g} seconds.")
            await _close(websocket)
            return
        if message["type"] == "websocket.disconnect":
            return
        if hanging:
            continue
        try:
            task, hanging = await _handle(message, state, conn, task, used_ids)
        except TaskFailed as exc:
            await conn.fail(exc.code, exc.message)
            await _close(websocket, exc.close_code, exc.close_reason)
            return


def _task_id_of(header: dict[str, Any]) -> str:
    """The message's task_id if it is a usable one, else "" (never echo a huge or non-string id)."""
    value = header.get("task_id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TASK_ID_CHARS else ""


def _parse(text: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(message, header, action) of a JSON frame; TaskFailed if it is not a task message."""
    if len(text) > MAX_TEXT_FRAME_CHARS:
        raise TaskFailed(
            "BadRequest.TooLarge",
            f"Text frame of {len(text)} characters exceeds the limit of {MAX_TEXT_FRAME_CHARS}.",
            close_code=1009,
            close_reason="text frame too large",
        )
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise TaskFailed("InvalidParameter", "Message is not valid JSON.") from None
    header = data.get("header") if isinstance(data, dict) else None
    action = header.get("action") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(action, str):
        raise TaskFailed("InvalidParameter", "Message is not a valid task JSON with header.action.")
    return data, header, action


async def _handle(
    message: dict[str, Any], state: SimState, conn: Conn, task: Task | None, used_ids: deque[str]
) -> tuple[Task | None, bool]:
    """Apply one client frame to the connection's task state; returns (running task, hanging)."""
    if message.get("bytes") is not None:
        if task is None:
            conn.task_id = ""
            raise TaskFailed(
                "InvalidParameter",
                "Binary (audio) frame received without a running task: send run-task and wait for "
                "task-started first.",
            )
        await task.on_audio(message["bytes"])
        return task, False
    data, header, action = _parse(message.get("text") or "")
    if action not in ACTIONS:
        raise TaskFailed("InvalidParameter", f"Unsupported action '{action[:64]}'.")
    task_id = _task_id_of(header)
    if action == "run-task":
        if task_id and task_id in used_ids:
            conn.task_id = task_id
            raise TaskFailed(
                "InvalidParameter",
                f"Duplicate task_id '{task_id}': each run-task on a connection needs a new task_id.",
            )
        task, hanging = await _run_task(data, state, conn)
        used_ids.append(conn.task_id)
        if task is not None and await task.start():
            task = None
        return task, hanging
    if task is None:
        conn.task_id = task_id
        raise TaskFailed(
            "InvalidParameter", f"'{action}' received without a running task (send run-task first)."
        )
    if task_id != conn.task_id:
        running, conn.task_id = conn.task_id, task_id
        raise TaskFailed(
            "InvalidParameter",
            f"'{action}' names task_id '{task_id}', which is not the running task '{running}'.",
        )
    if await task.on_message(data):
        task = None
    return task, False


async def _run_task(data: dict[str, Any], state: SimState, conn: Conn) -> tuple[Task | None, bool]:
    """Validate a run-task, record it, apply any fault, send task-started and build the task."""

    header = data["header"]
    payload = data.get("payload")
    conn.task_id = _task_id_of(header)
    payload = payload if isinstance(payload, dict) else {}
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    kind = payload.get("task")
    service = "asr" if kind == "asr" else "tts" if kind == "tts" else "ws"
    item = state.log.record(service, "/api-ws/v1/inference", model, True, data, task_id=conn.task_id)
    item.update({"audio_bytes": 0} if service == "asr" else {"text_chars": 0})

    def failed(code: str, message: str) -> TaskFailed:
        item["status"] = 400
        return TaskFailed(code, message)

    if not conn.task_id:
        raise failed(
            "InvalidParameter",
            f"header.task_id is required (a string of at most {MAX_TASK_ID_CHARS} characters).",
        )
    if payload.get("task_group") != "audio" or service == "ws":
        raise failed("InvalidParameter", "Unsupported task_group/task; expected audio asr or tts.")
    if not model:
        raise failed("InvalidParameter", "payload.model is required.")
    if "input" not in payload:
        raise failed("InvalidParameter", "task can not be null")
    streaming = header.get("streaming", "duplex")
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
            return None, True
        await apply_fault_latency(fault)
        if fault.status is not None and fault.cut_after is None:
            item["status"] = fault.status
            raise TaskFailed(fault.error_code, fault.error_message)
    params = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
    try:
        task = factory(conn, state, payload, params, item)
    except TaskFailed:
        item["status"] = 400
        raise
    conn.arm(fault)
    item["status"] = 200
    await conn.event("task-started", {})
    return task, False
