"""The DashScope-native front door: existing ``dashscope`` SDK apps change only their base URLs.

- ``POST /api/v1/services/aigc/text-generation/generation``: the chat chain;
- ``POST /api/v1/services/aigc/multimodal-generation/generation``: by what the body holds,
  qwen3-asr-flash (audio in the messages: the ASR chain), qwen-tts (``input.text``: the TTS
  chain; ``GET /api/v1/tts/audio/{name}`` serves its audio URL) or Qwen-VL (the chat chain);
- ``WS /api-ws/v1/inference``: Paraformer realtime ASR and CosyVoice TTS tasks.

The talkgate API key is the DashScope API key (``Authorization: Bearer``, as the SDK sends it).
Auth, scopes, quotas, rate limits, the usage row and metrics are the OpenAI routes' own
(``gateway.auth.run_admitted``; per WebSocket task ``gateway.auth.admitted``); every refusal is
answered in DashScope's shape (``code``, ``message``, ``request_id``, Bailian's status). The
translation lives in ``gateway/dashscope/``; this module accepts, authenticates and hands over.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from gateway.auth import ANY_SCOPE, Principal, admitted, authenticate, run_admitted
from gateway.context import RequestContext, get_context
from gateway.costs import charge_quota
from gateway.dashscope import bodies, front_asr, front_generation, front_tts
from gateway.dashscope.errors import DashScopeError, native_error
from gateway.dashscope.front_errors import from_exception, status_of_code
from gateway.dashscope.front_tasks import AsrTask, TtsTask
from gateway.dashscope.ws_task import (
    Conn,
    Task,
    TaskFailed,
    TaskLoop,
    check_run_task,
    deny_handshake,
    fail_internal,
    run_task_payload,
    task_parameters,
)
from gateway.errors import APIError, echo_limit
from gateway.schemas import read_body
from gateway.usage import UNKNOWN_MODEL, record
from policies.routing import UnknownModelError
from providers.base import ProviderError

log = logging.getLogger("talkgate.dashscope")
router = APIRouter()

Handler = Callable[[Request, Principal, dict[str, Any], str], Awaitable[Response]]
#: A route's scope, or how to pick it from the parsed body (the multimodal endpoint).
ScopeOf = str | Callable[[dict[str, Any]], str]


def _request_id(request: Request) -> str:
    """The gateway's request id as the body's ``request_id`` (the usage row and logs use it)."""
    return str(uuid.UUID(get_context(request).request_id))


async def _native_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object with a model; DashScopeError 400 otherwise."""
    services = request.app.state.services
    raw = await read_body(request, services.settings.max_upload_bytes)
    request._body = raw  # Starlette's cache: admission (gateway.auth) may read the body again
    body, reason = bodies.parse_json(raw)
    if body is None:
        raise DashScopeError(400, "InvalidParameter", reason or "Bad request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise DashScopeError(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    return body


async def serve(request: Request, send: Send, scope: ScopeOf, handler: Handler) -> None:
    """Admit the caller for ``scope``, run ``handler``, and answer any refusal before the first
    byte in DashScope's shape. The usage row is booked after the last byte, as for /v1.

    ``scope`` may depend on the body (the multimodal endpoint serves chat, ASR and TTS): the key
    is then checked first (a bad key is a 401 before the body is read), then the body is read
    and the caller admitted for the scope it picks."""
    request_id = _request_id(request)
    started = False
    parsed: dict[str, Any] | None = None

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    async def endpoint(principal: Principal) -> None:
        body = parsed if parsed is not None else await _native_body(request)
        try:
            response = await handler(request, principal, body, request_id)
        except Exception as exc:  # the usage row gets the status the client will see
            err, _ = from_exception(exc, echo_limit(request))
            record(request, status=err.status)
            if err.code == "ModelNotFound":
                record(request, model=UNKNOWN_MODEL)  # never book a client's arbitrary string
            raise
        await response(request.scope, request.receive, tracked)

    try:
        if isinstance(scope, str):
            name = scope
        else:
            await authenticate(request, ANY_SCOPE)
            parsed = await _native_body(request)
            name = scope(parsed)
        await run_admitted(request, name, endpoint)
    except Exception as exc:
        if started:
            raise  # mid-body: the connection is aborted (streams end with event:error themselves)
        err, headers = from_exception(exc, echo_limit(request))
        if err.status >= 500 and not isinstance(exc, APIError | DashScopeError):
            log.warning("DashScope front door answered %s: %r", err.code, exc)
        await native_error(err.status, err.code, err.message, request_id, headers)(
            request.scope, request.receive, send
        )


class _Served(Response):
    """The FastAPI route's answer: ``serve`` sends the whole response itself."""

    def __init__(self, request: Request, scope: ScopeOf, handler: Handler) -> None:
        super().__init__()
        self.request, self.scope_name, self.handler = request, scope, handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(self.request, send, self.scope_name, self.handler)


async def _generation(
    request: Request, principal: Principal, body: dict[str, Any], request_id: str
) -> Response:
    return await front_generation.generation(request, body, request_id)


def _multimodal_kind(request: Request, body: dict[str, Any]) -> str:
    """``asr``, ``tts`` or ``chat`` (Qwen-VL), the scope and chain that serve a multimodal call:
    by what its body holds, else by its model (a speech model with a malformed body gets that
    endpoint's own 400, not a chat 404)."""
    kind = bodies.multimodal_kind(body)
    if kind is not None:
        return kind
    router = request.app.state.services.router
    for capability in ("asr", "tts"):
        if _serves(router, capability, body["model"]) and not _serves(router, "chat", body["model"]):
            return capability
    return "chat"


def _serves(router: Any, capability: str, model: str) -> bool:
    try:
        router.resolve(capability, model)
    except UnknownModelError:
        return False
    return True


async def _multimodal(
    request: Request, principal: Principal, body: dict[str, Any], request_id: str
) -> Response:
    kind = _multimodal_kind(request, body)
    if kind == "asr":
        return await front_asr.transcription(request, principal, body, request_id)
    if kind == "tts":
        return await front_tts.speech(request, principal, body, request_id)
    return await front_generation.generation(request, body, request_id, multimodal=True)


@router.post(bodies.GENERATION_PATH)
async def text_generation(request: Request) -> Response:
    return _Served(request, "chat", _generation)


async def _text_generation_lean(request: Request, send: Send) -> None:
    await serve(request, send, "chat", _generation)


text_generation.lean_endpoint = _text_generation_lean  # type: ignore[attr-defined]


@router.post(bodies.MULTIMODAL_PATH)
async def multimodal_generation(request: Request) -> Response:
    """qwen3-asr-flash, qwen-tts or Qwen-VL, by what the body holds (``bodies.multimodal_kind``)."""
    return _Served(request, lambda body: _multimodal_kind(request, body), _multimodal)


@router.get(front_tts.AUDIO_PATH)
async def tts_audio(name: str, request: Request) -> Response:
    """A qwen-tts answer's ``audio.url``: the caller's own tenant's file (a key with the tts
    scope), until it expires; refusals in DashScope's shape."""
    try:
        principal = await authenticate(request, "tts")
        return front_tts.audio_file(request, principal, name)
    except (APIError, DashScopeError) as exc:
        err, headers = from_exception(exc, echo_limit(request))
        return native_error(err.status, err.code, err.message, _request_id(request), headers)


# --------------------------------------------------------------------------- inference WebSocket


async def _start_task(websocket: WebSocket, data: dict[str, Any], conn: Conn) -> Task:
    """Authorise, admit and start one run-task; refusals become task-failed (TaskFailed)."""
    services = websocket.app.state.services
    payload, model, service = run_task_payload(data)
    check_run_task(conn, payload, model, service)
    assert model is not None
    if service == "tts" and data["header"].get("streaming", "duplex") != "duplex":
        raise TaskFailed("InvalidParameter", "Only duplex (CosyVoice) speech synthesis is served here.")
    websocket.scope["talkgate.ctx"] = ctx = RequestContext(request_id=uuid.uuid4().hex, model=model)
    try:
        principal = await authenticate(websocket, service)
        capability = "asr" if service == "asr" else "tts"
        services.router.resolve(capability, model)
        admission = admitted(websocket, principal, service)
        await admission.__aenter__()
    except Exception as exc:
        err, _ = from_exception(exc, echo_limit(websocket))
        raise TaskFailed(err.code, err.message) from None
    params = task_parameters(payload)

    def book(**fields: Any) -> None:
        record(websocket, **fields)  # type: ignore[arg-type]

    async def charge(amount: float) -> None:
        quota = "asr_seconds" if service == "asr" else "tts_chars"
        await charge_quota(websocket, principal, {quota: amount})

    try:
        if service == "asr":
            task: Any = AsrTask(
                conn,
                model,
                params,
                services.settings,
                lambda r: services.router.transcribe(r, ctx),
                charge,
                book,
                lambda r, audio: services.router.transcribe_stream(r, audio, ctx),
            )
        else:
            task = TtsTask(
                conn,
                model,
                params,
                services.settings,
                lambda r: services.router.synthesize_stream(r, ctx),
                charge,
                book,
            )
    except TaskFailed as exc:
        record(websocket, status=status_of_code(exc.code))  # type: ignore[arg-type]
        await admission.__aexit__(None, None, None)
        raise
    try:
        await conn.event("task-started", {})
    except BaseException:  # the client left: free the slot and book the row now
        await task.close()
        await admission.__aexit__(None, None, None)
        raise
    return _Admitted(task, admission, websocket, ctx)


class _Admitted:
    """A front task plus its admission: the usage row is booked when the task ends, however."""

    def __init__(self, task: Any, admission: Any, websocket: WebSocket, ctx: RequestContext) -> None:
        self.task, self.admission, self.websocket, self.ctx = task, admission, websocket, ctx

    async def start(self) -> bool:
        return await self.task.start()

    async def on_audio(self, data: bytes) -> None:
        await self._run(self.task.on_audio(data))

    async def on_message(self, message: dict[str, Any]) -> bool:
        return await self._run(self.task.on_message(message))

    async def _run(self, step: Awaitable[Any]) -> Any:
        try:
            return await step
        except TaskFailed as exc:
            record(self.websocket, status=status_of_code(exc.code))  # type: ignore[arg-type]
            raise
        except (APIError, DashScopeError, ProviderError, UnknownModelError) as exc:  # e.g. a used-up quota
            err, _ = from_exception(exc, echo_limit(self.websocket))
            record(self.websocket, status=err.status)  # type: ignore[arg-type]
            raise TaskFailed(err.code, err.message) from None

    async def close(self) -> None:
        await self.task.close()
        await self.admission.__aexit__(None, None, None)


async def inference(websocket: WebSocket) -> None:
    try:
        await authenticate(websocket, ANY_SCOPE)
    except APIError as exc:
        err, _ = from_exception(exc, echo_limit(websocket))
        await deny_handshake(websocket, err.status, err.code, err.message)
        return
    await websocket.accept()
    conn = Conn(websocket)

    async def start(data: dict[str, Any], conn_: Conn) -> Task:
        return await _start_task(websocket, data, conn_)

    try:
        await TaskLoop(websocket, conn, start).run()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("DashScope inference task failed unexpectedly")
        await fail_internal(websocket, conn)


inference.talkgate_scope = "asr|tts"  # type: ignore[attr-defined]  # checked per task (run-task)
for _path in bodies.INFERENCE_WS_PATHS:
    router.add_api_websocket_route(_path, inference)
