"""What a simulated NLS task uses of its WebSocket: events, audio frames and a fault's frame budget.

A leaf module (tasks and the gateway loop import it; it imports neither).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from gateway.sim.nls import wire
from gateway.sim.state import Fault


class Cut(Exception):
    """An injected ``cut_after`` fault ended the connection; ``abrupt`` means without TaskFailed."""

    def __init__(self, abrupt: bool) -> None:
        super().__init__("simulated cut")
        self.abrupt = abrupt


class NlsConn:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.namespace = ""
        self.task_id = ""
        self.sent = 0
        self.fault: Fault | None = None

    async def _budget(self) -> None:
        fault = self.fault
        if fault is None or fault.cut_after is None or self.sent < fault.cut_after:
            self.sent += 1
            return
        if fault.status is not None:
            status = wire.FAULT_STATUS.get(fault.status, 50000000)
            await self.fail(status, fault.message or "Simulated failure.")
            raise Cut(abrupt=False)
        raise Cut(abrupt=True)

    async def event(self, name: str, payload: dict[str, Any] | None = None) -> None:
        await self._budget()
        await self.ws.send_str(wire.event(self.namespace, name, self.task_id, payload))

    async def audio(self, data: bytes) -> None:
        await self._budget()
        await self.ws.send_bytes(data)

    async def fail(self, status: int, message: str) -> None:
        await self.ws.send_str(wire.task_failed(self.task_id, status, message))


class NlsTask(Protocol):
    #: the Stop directive this task accepts ("" for one-shot synthesis)
    stop_name: str

    async def start(self) -> bool:
        """Answer the Start directive; True when the task is already complete (synthesis)."""
        ...

    async def on_audio(self, data: bytes) -> None: ...

    async def stop(self) -> None:
        """The Stop directive: send the remaining results and the *Completed event."""
        ...
