"""The NLS WebSocket gateway ``/ws/v1``: token at the handshake, then one task per connection.

Handshake: the token comes in ``X-NLS-Token`` (every official SDK) or ``?token=`` (the docs); a
missing, unknown or expired one is refused with HTTP 403 and NLS's plain-text reason, or, with
``token_check="task_failed"``, accepted and answered with TaskFailed 40000001 at the first
directive. The server is aiohttp's, which takes the *first* ``Sec-WebSocket-Key``: the official
Python SDK sends two, and validates the answer against the first (reference §2.2), which the
``websockets`` server refuses outright.

Directives (JSON text frames) must name a known namespace (40010001) and AppKey (40020105), carry
32-hex ids and come in order: Start, audio and control (or a task's own, e.g. RunSynthesis of the
streaming-text FlowingSpeechSynthesizer), Stop; anything out of order is 40000002, a
second Stop 40010005, audio before Start 40000002. No client frame for ``idle_timeout_s`` (pings
count) ends a running task with 40000004. At most ``max_concurrent`` tasks per service run at once
(40000005). Faults from ``/sim/faults`` with service ``nls-asr`` / ``nls-tts`` (model = AppKey)
apply at Start, exactly as on the Bailian side: latency, an error status, ``hang``, ``cut_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from gateway.sim.http_common import apply_fault_latency
from gateway.sim.nls import wire
from gateway.sim.nls.conn import Cut, NlsConn, NlsTask
from gateway.sim.nls.context import NLS_KEY, SIM_KEY, wait_closed
from gateway.sim.nls.flowing import FlowingSynthesizerTask
from gateway.sim.nls.state import NlsState
from gateway.sim.nls.synthesizer import SynthesizerTask
from gateway.sim.nls.transcriber import TranscriberTask
from gateway.sim.nls.wire import NlsFailure
from gateway.sim.state import SimState

log = logging.getLogger(__name__)

#: namespace -> (Start directive, fault/log service, task class)
NAMESPACES: dict[str, tuple[str, str, Any]] = {
    "SpeechTranscriber": ("StartTranscription", "nls-asr", TranscriberTask),
    "SpeechRecognizer": ("StartRecognition", "nls-asr", TranscriberTask),
    "SpeechSynthesizer": ("StartSynthesis", "nls-tts", SynthesizerTask),
    "SpeechLongSynthesizer": ("StartSynthesis", "nls-tts", SynthesizerTask),
    "FlowingSpeechSynthesizer": ("StartSynthesis", "nls-tts", FlowingSynthesizerTask),
}
CONTROL_DIRECTIVES = frozenset({"ControlTranscriber"})
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_TEXT_FRAME_CHARS = 64 * 1024
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def _echo(token: str) -> str:
    return token if len(token) <= 64 else token[:64] + "..."


def denial(problem: str, token: str) -> str:
    if problem == "missing":
        return "Gateway:ACCESS_DENIED:Missing authorization header!"
    if problem == "expired":
        return f"Gateway:ACCESS_DENIED:The token '{_echo(token)}' has expired!"
    return f"Meta:ACCESS_DENIED:The token '{_echo(token)}' is invalid!."


async def nls_ws(request: web.Request) -> web.StreamResponse:
    sim: SimState = request.app[SIM_KEY]
    nls: NlsState = request.app[NLS_KEY]
    token = request.headers.get("X-NLS-Token") or request.query.get("token") or ""
    problem = nls.token_problem(token)
    if problem is not None and nls.config.token_check == "http403":
        item = sim.log.record("nls-ws", request.path, None, True, None)
        item["status"] = 403
        return web.Response(status=403, text=denial(problem, token), headers={"Server": "Tengine"})
    ws = web.WebSocketResponse(autoping=True, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    session = Session(sim, nls, NlsConn(ws), denial(problem, token) if problem else None)
    try:
        await session.run()
    except Cut as cut:
        if cut.abrupt and request.transport is not None:
            request.transport.abort()
            return ws
    except NlsFailure as failure:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await session.conn.fail(failure.status, failure.message)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("simulated NLS task failed unexpectedly")
        with contextlib.suppress(ConnectionError, RuntimeError):
            await session.conn.fail(50000000, "Server internal error!")
    finally:
        session.release()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close()
    return ws


class Session:
    """One connection's task state machine: IDLE -> STARTED -> COMPLETED."""

    def __init__(self, sim: SimState, nls: NlsState, conn: NlsConn, token_denial: str | None) -> None:
        self.sim, self.nls, self.conn = sim, nls, conn
        self.token_denial = token_denial
        self.state = "IDLE"
        self.task: NlsTask | None = None
        self.last_directive = ""
        self.service: str | None = None  # holds a concurrency slot while set
        self.item: dict[str, Any] = {}

    def release(self) -> None:
        if self.service is not None:
            self.nls.running[self.service] = max(0, self.nls.running.get(self.service, 1) - 1)
            self.service = None

    async def run(self) -> None:
        ws = self.conn.ws
        while True:
            try:
                msg = await ws.receive(timeout=self.nls.config.idle_timeout_s)
            except TimeoutError:
                if self.state != "COMPLETED":
                    last = f", the last directive is '{self.last_directive}'!" if self.last_directive else "!"
                    raise NlsFailure(40000004, f"Websocket session is idle for too long time{last}") from None
                return
            if msg.type in _CLOSED:
                if self.state == "STARTED":
                    self.item["status"] = 40010004  # Client disconnected before task finished
                return
            if msg.type is WSMsgType.BINARY:
                if self.state != "STARTED" or self.task is None:
                    raise NlsFailure(40000002, f"Can't process message in state '{self.state}'!")
                await self.task.on_audio(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await self._directive(msg.data)

    def _parse(self, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(text) > MAX_TEXT_FRAME_CHARS:
            raise NlsFailure(40000002, "Message is too large!")
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise NlsFailure(40000002, "Message is not valid JSON!") from None
        header = message.get("header") if isinstance(message, dict) else None
        if not isinstance(header, dict):
            raise NlsFailure(40000002, "Message has no header!")
        return message, header

    async def _directive(self, text: str) -> None:
        message, header = self._parse(text)
        conn = self.conn
        task_id = header.get("task_id")
        if self.state == "IDLE" and isinstance(task_id, str) and _ID_RE.match(task_id):
            conn.task_id = task_id
        if self.token_denial is not None:
            raise NlsFailure(40000001, self.token_denial.split(":", 2)[2])
        for field in ("message_id", "task_id"):
            value = header.get(field)
            if not isinstance(value, str) or not _ID_RE.match(value):
                raise NlsFailure(40000002, f"Header '{field}' must be a 32-character hex id!")
        namespace, name = header.get("namespace"), header.get("name")
        if not isinstance(namespace, str) or namespace not in NAMESPACES:
            raise NlsFailure(40010001, f"Namespace '{str(namespace)[:64]}' is not supported!")
        if not isinstance(name, str):
            raise NlsFailure(40010003, "[header.name is missing]")
        if not self.nls.config.appkey_ok(header.get("appkey")):
            raise NlsFailure(40020105, "Appkey not exist!")
        if self.state != "IDLE" and (task_id != conn.task_id or namespace != conn.namespace):
            raise NlsFailure(40000002, f"Can't process message in state '{self.state}'!")
        self.last_directive = name
        if self.state == "IDLE":
            if name != NAMESPACES[namespace][0]:
                raise NlsFailure(40000002, "Can't process message in state 'IDLE'!")
            await self._start(namespace, header, message)
        elif self.state == "STARTED" and self.task is not None:
            if name == self.task.stop_name:
                self.state = "STOPPING"
                await self.task.stop()
                self.state = "COMPLETED"
                self.item["status"] = 200
            elif name in getattr(self.task, "directives", ()):
                await self.task.on_directive(name, message)  # type: ignore[attr-defined]
            elif name not in CONTROL_DIRECTIVES:
                raise NlsFailure(40000002, f"Can't process message in state '{self.state}'!")
        elif name.startswith("Stop"):
            raise NlsFailure(40010005, "Got stop directive while task is stopping!")
        else:
            raise NlsFailure(40000002, f"Can't process message in state '{self.state}'!")

    async def _start(self, namespace: str, header: dict[str, Any], message: dict[str, Any]) -> None:
        conn = self.conn
        conn.namespace = namespace
        _, service, factory = NAMESPACES[namespace]
        appkey = header["appkey"]
        self.item = self.sim.log.record(service, "/ws/v1", appkey, True, message, task_id=conn.task_id)
        if self.nls.running.get(service, 0) >= self.nls.config.max_concurrent:
            self.item["status"] = 40000005
            raise NlsFailure(40000005, "Too many requests!")
        self.service = service
        self.nls.running[service] = self.nls.running.get(service, 0) + 1
        fault = self.sim.faults.take(service, appkey)
        if fault is not None:
            self.item["fault"] = fault.id
            if fault.hang:
                await wait_closed(conn.ws)
                return
            await apply_fault_latency(fault)
            if fault.status is not None and fault.cut_after is None:
                status = (
                    int(fault.code) if (fault.code or "").isdigit() else wire.FAULT_STATUS.get(fault.status)
                )
                self.item["status"] = status or 50000000
                raise NlsFailure(status or 50000000, fault.message or "Simulated failure.")
            conn.fault = fault
        payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
        try:
            self.task = factory(conn, self.sim, payload, self.item)
        except NlsFailure as failure:
            self.item["status"] = failure.status
            raise
        self.state = "STARTED"
        assert self.task is not None
        if await self.task.start():
            self.state = "COMPLETED"
            self.item["status"] = 200
