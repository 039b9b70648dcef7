"""The inference WebSocket's task state machine, server side (reference §4.1, §5.1-5.2).

The client drives tasks with ``run-task`` / ``continue-task`` / ``finish-task`` (JSON in text
frames) and sends audio in binary frames; the server answers ``task-started`` before anything
else, then events and audio, then ``task-finished`` (or ``task-failed`` and a close). A
connection runs tasks one after another, each with a new task_id; a new run-task aborts the
running one. What a task *does* (recognise, speak; canned or through the router) is the
``start_task`` callback's business; the simulator and the gateway's front door share the rest.

Whatever a client sends, the answer is protocol-level: a frame the state machine cannot accept
(not JSON, no header.action, audio or continue/finish-task with no running task, a task_id other
than the running one, a reused task_id, an oversized frame) gets ``task-failed`` and then the
close, as Bailian closes after task-failed; a bug in a task gets ``task-failed`` InternalError
and close 1011. Only that connection ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.dashscope.bodies import new_request_id
from gateway.dashscope.errors import error_body
from providers.cloud.ws_envelope import ACTIONS, event_frame, failed_frame

log = logging.getLogger(__name__)

#: A connection with no task is closed after this long (Bailian: 60 s after the task ends).
IDLE_WITHOUT_TASK_S = 60.0
#: A running task with no client message for this long fails with CLIENT_ERROR (Bailian: 23 s).
TASK_IDLE_S = 23.0
#: JSON (text) frames are small: CosyVoice allows 20,000 characters per continue-task. A larger one
#: is refused before it is parsed: task-failed, then close 1009.
MAX_TEXT_FRAME_CHARS = 1024 * 1024
MAX_TASK_ID_CHARS = 128
#: task_ids used on one connection that a new run-task may not repeat (bounded per connection).
REMEMBERED_TASK_IDS = 1024
INTERNAL_ERROR = "An internal error has occured, please try again later."


class Conn:
    """Writes one connection's task events and audio frames in the server envelope.

    ``before_send`` runs before every event and audio frame (not before task-failed): the
    simulator counts frames there for its ``cut_after`` faults; the front door needs nothing.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.task_id = ""

    async def before_send(self) -> None:
        return None

    async def event(self, event: str, payload: dict[str, Any], **attributes: Any) -> None:
        await self.before_send()
        await self.ws.send_text(event_frame(self.task_id, event, payload, **attributes).decode())

    async def audio(self, data: bytes) -> None:
        await self.before_send()
        await self.ws.send_bytes(data)

    async def fail(self, code: str, message: str) -> None:
        """task-failed; the caller then closes the connection."""
        await self.ws.send_text(failed_frame(self.task_id, code, message).decode())


class Task(Protocol):
    async def on_message(self, message: dict[str, Any]) -> bool:
        """A continue-task or finish-task for this task; returns True once the task is over."""
        ...

    async def on_audio(self, data: bytes) -> None: ...

    async def start(self) -> bool:
        """Called after task-started; returns True if the task already finished (one-way tasks)."""
        ...

    async def close(self) -> None:
        """The task ends, however (finished, failed, aborted, disconnected): free what it holds."""
        ...


class TaskFailed(Exception):
    """Ends the task with task-failed ``code``/``message``, then the connection with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int = 1000, close_reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.close_code, self.close_reason = close_code, close_reason


#: ``start_task(message, conn)``: validate a run-task (``conn.task_id`` is already set), send
#: task-started and return the running task; None when it should be left hanging (a fault).
StartTask = Callable[[dict[str, Any], Conn], Awaitable[Task | None]]


async def deny_handshake(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the upgrade with an HTTP status and the native error body (a bad key: 401, §1.2)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = orjson.dumps(error_body(code, message, new_request_id()))
        await websocket.send_denial_response(
            Response(body, status_code=status, media_type="application/json")
        )
    else:  # servers without the denial extension can only refuse with a close
        await websocket.close(code=1008)


async def close_quietly(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    try:
        await websocket.close(code=code, reason=reason or None)
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass


def task_id_of(header: dict[str, Any]) -> str:
    """The message's task_id if it is a usable one, else "" (never echo a huge or non-string id)."""
    value = header.get("task_id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TASK_ID_CHARS else ""


def parse_frame(text: str) -> tuple[dict[str, Any], dict[str, Any], str]:
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


def run_task_payload(data: dict[str, Any]) -> tuple[dict[str, Any], str | None, str]:
    """(payload, model, service) of a run-task, service being "asr", "tts" or "ws" (neither)."""
    payload = data.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    kind = payload.get("task")
    service = "asr" if kind == "asr" else "tts" if kind == "tts" else "ws"
    return payload, model, service


def check_run_task(conn: Conn, payload: dict[str, Any], model: str | None, service: str) -> None:
    """Bailian's envelope checks of a run-task, in its order; TaskFailed 400-class on the first miss."""
    if not conn.task_id:
        raise TaskFailed(
            "InvalidParameter",
            f"header.task_id is required (a string of at most {MAX_TASK_ID_CHARS} characters).",
        )
    if payload.get("task_group") != "audio" or service == "ws":
        raise TaskFailed("InvalidParameter", "Unsupported task_group/task; expected audio asr or tts.")
    if not model:
        raise TaskFailed("InvalidParameter", "payload.model is required.")
    if "input" not in payload:
        raise TaskFailed("InvalidParameter", "task can not be null")


def task_parameters(payload: dict[str, Any]) -> dict[str, Any]:
    params = payload.get("parameters")
    return params if isinstance(params, dict) else {}


class TaskLoop:
    """Runs the tasks of one accepted connection until it closes.

    ``task_idle_s``: a running task with no client message for this long fails with
    CLIENT_ERROR; ``hang_s``: how long a task left hanging (``start_task`` returned None)
    ignores the client before the connection is closed.
    """

    def __init__(
        self,
        websocket: WebSocket,
        conn: Conn,
        start_task: StartTask,
        task_idle_s: float = TASK_IDLE_S,
        hang_s: float = 600.0,
    ) -> None:
        self.ws, self.conn, self.start_task = websocket, conn, start_task
        self.task_idle_s, self.hang_s = task_idle_s, hang_s
        self.task: Task | None = None
        self.hanging = False
        self.used_ids: deque[str] = deque(maxlen=REMEMBERED_TASK_IDS)

    async def run(self) -> None:
        """Serve frames; TaskFailed ends the connection with task-failed and a close. Other
        exceptions propagate (the caller decides: the simulator's drops, an internal error)."""
        try:
            await self._loop()
        finally:
            await self._end_task()

    async def _end_task(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            await task.close()

    async def _loop(self) -> None:
        while True:
            if self.hanging:
                timeout = self.hang_s
            else:
                timeout = self.task_idle_s if self.task is not None else IDLE_WITHOUT_TASK_S
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=timeout)
            except TimeoutError:
                if self.task is not None and not self.hanging:
                    await self.conn.fail("CLIENT_ERROR", f"request timeout after {timeout:g} seconds.")
                await close_quietly(self.ws)
                return
            if message["type"] == "websocket.disconnect":
                return
            if self.hanging:
                continue
            try:
                await self._handle(message)
            except TaskFailed as exc:
                await self._end_task()
                await self.conn.fail(exc.code, exc.message)
                await close_quietly(self.ws, exc.close_code, exc.close_reason)
                return

    async def _handle(self, message: dict[str, Any]) -> None:
        """Apply one client frame to the connection's task state."""
        conn = self.conn
        if message.get("bytes") is not None:
            if self.task is None:
                conn.task_id = ""
                raise TaskFailed(
                    "InvalidParameter",
                    "Binary (audio) frame received without a running task: send run-task and wait for "
                    "task-started first.",
                )
            await self.task.on_audio(message["bytes"])
            return
        data, header, action = parse_frame(message.get("text") or "")
        if action not in ACTIONS:
            raise TaskFailed("InvalidParameter", f"Unsupported action '{action[:64]}'.")
        task_id = task_id_of(header)
        if action == "run-task":
            if task_id and task_id in self.used_ids:
                conn.task_id = task_id
                raise TaskFailed(
                    "InvalidParameter",
                    f"Duplicate task_id '{task_id}': each run-task on a connection needs a new task_id.",
                )
            await self._end_task()  # a new run-task aborts the running one
            conn.task_id = task_id
            task = await self.start_task(data, conn)
            self.used_ids.append(conn.task_id)
            if task is None:
                self.hanging = True
                return
            self.task = task
            if await task.start():
                await self._end_task()
            return
        if self.task is None:
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
        if await self.task.on_message(data):
            await self._end_task()


async def fail_internal(websocket: WebSocket, conn: Conn) -> None:
    """A bug in a task must still look like a failing cloud task, not a hung or reset socket."""
    try:
        await conn.fail("InternalError", INTERNAL_ERROR)
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass
    await close_quietly(websocket, 1011, "internal error")
