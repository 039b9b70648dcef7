"""One DashScope duplex task (run-task → continue/finish-task) over the inference WebSocket.

Paraformer/Fun-ASR and CosyVoice share this envelope: JSON actions and events in text
frames, audio in binary frames, ``task-started`` before anything else, ``task-failed``
ending the task with an ``error_code``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from providers.base import ErrorKind, ProviderError
from providers.cloud import errors
from providers.cloud.ws_envelope import action_frame

if TYPE_CHECKING:
    from providers.cloud.client import DashScopeClient

_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class DuplexTask:
    """Drives one task on an open WebSocket. Every receive is bounded by ``timeout_s``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, timeout_s: float) -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self.task_id = uuid.uuid4().hex
        self.finished_payload: dict[str, Any] = {}
        self.heard_back = False  # any message from the server yet (a stale pooled socket has none)
        self.finished = False

    async def send_action(self, action: str, payload: dict[str, Any]) -> None:
        with errors.translated():
            await self.ws.send_str(action_frame(action, self.task_id, payload).decode())

    async def send_audio(self, frame: bytes) -> None:
        with errors.translated():
            await self.ws.send_bytes(frame)

    async def start(self, payload: dict[str, Any]) -> None:
        """Send run-task and wait for task-started (task-failed raises)."""
        await self.send_action("run-task", payload)
        while True:
            item = await self.receive()
            if item is None:
                raise ProviderError(ErrorKind.RETRYABLE, "task finished before task-started")
            event = item[0]
            if event is not None and event["header"].get("event") == "task-started":
                return

    async def finish(self, payload: dict[str, Any] | None = None) -> None:
        await self.send_action("finish-task", payload or {"input": {}})

    async def receive(self) -> tuple[dict[str, Any] | None, bytes | None] | None:
        """The next message: ``(event, None)`` for JSON, ``(None, bytes)`` for audio, None after task-finished.

        task-failed and an early close raise ProviderError. The task-finished payload is
        kept in ``finished_payload``.
        """
        while True:
            with errors.translated():
                msg = await self.ws.receive(timeout=self.timeout_s)
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.heard_back = True
            if msg.type is aiohttp.WSMsgType.BINARY:
                return None, msg.data
            if msg.type is aiohttp.WSMsgType.TEXT:
                with errors.translated():
                    event = orjson.loads(msg.data)
                header = event.get("header") or {}
                name = header.get("event")
                if name == "task-failed":
                    raise errors.task_failed(header)
                if name == "task-finished":
                    self.finished_payload = event.get("payload") or {}
                    self.finished = True
                    return None
                return event, None
            if msg.type in _CLOSED:
                raise ProviderError(
                    ErrorKind.RETRYABLE, "DashScope closed the WebSocket before the task finished"
                )
            if msg.type is aiohttp.WSMsgType.ERROR:
                raise errors.from_exception(msg.data)
            # PING/PONG are answered by aiohttp; anything else is skipped.


@contextlib.asynccontextmanager
async def duplex_task(client: DashScopeClient, run_payload: dict[str, Any]) -> AsyncIterator[DuplexTask]:
    """A started task on a pooled (or new) WebSocket; the socket goes back to the pool only
    if the task finished cleanly, otherwise it is closed."""
    task = await _start(client, run_payload)
    try:
        yield task
    finally:
        await client.release_ws(task.ws, reusable=task.finished)


async def _start(client: DashScopeClient, run_payload: dict[str, Any]) -> DuplexTask:
    ws, reused = await client.acquire_ws()
    task = DuplexTask(ws, client.timeout_s)
    try:
        await task.start(run_payload)
        return task
    except BaseException as exc:
        await client.release_ws(ws, reusable=False)
        stale = (
            reused
            and not task.heard_back
            and isinstance(exc, ProviderError)
            and exc.kind is ErrorKind.RETRYABLE
            and exc.code is None
        )
        if not stale:
            raise
    # The pooled socket had been closed by the server while idle: one fresh connection.
    task = DuplexTask(await client.connect_ws(), client.timeout_s)
    try:
        await task.start(run_payload)
    except BaseException:
        await task.ws.close()
        raise
    return task
