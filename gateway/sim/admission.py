"""The checks every simulated HTTP call goes through, in Bailian's order, plus fault injection.

key → JSON body → model → (record) → injected fault. Every attempt is recorded, including those
answered with 401 or an injected fault, because tests count upstream retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import bearer_key, new_request_id, read_json, wants_sse
from gateway.dashscope.errors import INVALID_KEY
from gateway.sim.http_common import DropResponse, HangResponse, apply_fault_latency, fault_headers
from gateway.sim.models import model_not_found_message
from gateway.sim.state import Fault, SimState


class ErrorFactory(Protocol):
    def __call__(
        self, status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None
    ) -> Response: ...


@dataclass
class Call:
    """An admitted request: what the service handler needs to answer it."""

    request_id: str
    body: dict[str, Any]
    model: str
    stream: bool
    fault: Fault | None
    record: dict[str, Any]


async def admit(
    request: Request,
    state: SimState,
    service: str | Callable[[str | None], str],
    model_ok: Callable[[str], bool],
    error: ErrorFactory,
    stream: bool | None = None,
    stream_in_body: bool = False,
    redact: Callable[[dict[str, Any]], Any] | None = None,
) -> Call | Response:
    """Run the common checks; returns a ready error/fault Response or the admitted Call.

    ``service`` may be a function of the model name (one path serving ASR and TTS models).
    ``stream=None`` decides streaming from the SSE headers, ``stream_in_body`` from ``body["stream"]``
    (OpenAI style). A fault's ``cut_after`` is left for the
    streaming handler; on a non-streaming call a cut without a status drops the connection.
    """
    rid = new_request_id()
    body, reason = await read_json(request)
    model = body.get("model") if body else None
    model = model if isinstance(model, str) else None
    if stream_in_body:
        is_stream = bool(body and body.get("stream") is True)
    else:
        is_stream = wants_sse(request.headers) if stream is None else stream
    if callable(service):
        service = service(model)
    record = state.log.record(
        service,
        request.url.path,
        model,
        is_stream,
        (redact(body) if redact else body) if body is not None else None,
    )

    def fail(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        record["status"] = status
        return error(status, code, message, rid, headers)

    if not state.config.key_ok(bearer_key(request.headers)):
        return fail(401, *INVALID_KEY)
    if body is None:
        return fail(400, "InvalidParameter", reason or "Bad request.")
    if not model:
        return fail(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    if not model_ok(model):
        return fail(404, "ModelNotFound", model_not_found_message(model))
    fault = state.faults.take(service, model)
    if fault is not None:
        record["fault"] = fault.id
        if fault.hang:
            record["status"] = 0
            return HangResponse()
        await apply_fault_latency(fault)
        if fault.status is not None and (fault.cut_after is None or not is_stream):
            return fail(fault.status, fault.error_code, fault.error_message, fault_headers(fault))
        if fault.cut_after is not None and not is_stream:
            record["status"] = 0
            return DropResponse()
    record["status"] = 200
    return Call(rid, body, model, is_stream, fault, record)
