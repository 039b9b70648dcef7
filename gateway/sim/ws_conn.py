"""What a simulated inference-WebSocket task uses of its connection: ``Conn``, ``Task`` and the
exceptions that end them. A leaf module: ``ws.py`` (the protocol loop) and the task modules
(``ws_asr.py``, ``ws_tts.py``) import it, and it imports neither, so they form no import circle.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.websockets import WebSocket

from gateway.sim.state import Fault


class Dropped(Exception):
    """The connection was ended by an injected fault; ``abrupt`` means no close frame."""

    def __init__(self, abrupt: bool) -> None:
        super().__init__("simulated drop")
        self.abrupt = abrupt


class Conn:
    """Sends task events and audio frames; enforces a fault's ``cut_after`` frame budget."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.frames = 0
        self.cut_after: int | None = None
        self.cut_fault: Fault | None = None
        self.task_id = ""

    def arm(self, fault: Fault | None) -> None:
        self.frames = 0
        self.cut_after = fault.cut_after if fault else None
        self.cut_fault = fault

    async def _budget(self) -> None:
        if self.cut_after is None or self.frames < self.cut_after:
            self.frames += 1
            return
        fault = self.cut_fault
        if fault is not None and fault.status is not None:
            await self.fail(fault.error_code, fault.error_message)
            raise Dropped(abrupt=False)
        raise Dropped(abrupt=True)

    async def event(self, event: str, payload: dict[str, Any], **attributes: Any) -> None:
        await self._budget()
        header = {"task_id": self.task_id, "event": event, "attributes": attributes}
        await self.ws.send_text(orjson.dumps({"header": header, "payload": payload}).decode())

    async def audio(self, data: bytes) -> None:
        await self._budget()
        await self.ws.send_bytes(data)

    async def fail(self, code: str, message: str) -> None:
        """task-failed (never counted against the budget), then the server closes the connection."""
        header = {
            "task_id": self.task_id,
            "event": "task-failed",
            "error_code": code,
            "error_message": message,
            "attributes": {},
        }
        await self.ws.send_text(orjson.dumps({"header": header, "payload": {}}).decode())


class Task(Protocol):
    async def on_message(self, message: dict[str, Any]) -> bool:
        """A JSON message for this task; returns True once the task is over (finished)."""
        ...

    async def on_audio(self, data: bytes) -> None: ...

    async def start(self) -> bool:
        """Called after task-started; returns True if the task already finished (one-way tasks)."""
        ...


class TaskFailed(Exception):
    """Ends the task with task-failed ``code``/``message``, then the connection with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int = 1000, close_reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.close_code, self.close_reason = close_code, close_reason
