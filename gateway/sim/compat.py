"""OpenAI-compatible chat: ``POST /compatible-mode/v1/chat/completions`` (reference §2.4).

This is the upstream for gateway latency benchmarks, so the path is kept lean: orjson, no sleeps
when latencies are 0, one small dict per chunk, no task group per response.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import bad_max_tokens, json_response, last_user_text
from gateway.sim.admission import Call, admit
from gateway.sim.generation import Answer
from gateway.sim.http_common import SimStream, sleep_ms
from gateway.sim.models import is_generation_model
from gateway.sim.state import SimState

PATH = "/compatible-mode/v1/chat/completions"
DONE = b"data: [DONE]\n\n"

# Native Bailian codes → (OpenAI-style code, type, message override or None).
_COMPAT_CODES: dict[str, tuple[str, str, str | None]] = {
    "InvalidApiKey": ("invalid_api_key", "invalid_request_error", "Incorrect API key provided. "),
    "ModelNotFound": ("model_not_found", "invalid_request_error", None),
    "InvalidParameter": ("invalid_parameter_error", "invalid_request_error", None),
    "DataInspectionFailed": ("data_inspection_failed", "data_inspection_failed", None),
    "InternalError": ("internal_error", "internal_error", None),
}


def _snake(code: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", code).replace(".", "_").lower()


def compat_error(
    status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> Response:
    """OpenAI-shaped error body as compatible mode sends it (UNCONFIRMED shape, reference §9)."""
    if code.startswith(("Throttling", "LimitRequests")):
        mapped = ("limit_requests", "limit_requests", None)
    else:
        mapped = _COMPAT_CODES.get(code, (_snake(code), _snake(code), None))
    error = {"message": mapped[2] or message, "type": mapped[1], "param": None, "code": mapped[0]}
    return json_response({"error": error, "request_id": request_id}, status, headers)


def _usage(n_in: int, n_out: int) -> dict[str, int]:
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


async def chat_completions(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(request, state, "generation", is_generation_model, compat_error, stream_in_body=True)
    if isinstance(call, Response):
        return call
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not messages:
        call.record["status"] = 400
        return compat_error(400, "InvalidParameter", "'messages' must be a non-empty array.", call.request_id)
    for name in ("max_completion_tokens", "max_tokens"):
        problem = bad_max_tokens(call.body.get(name))
        if problem:
            call.record["status"] = 400
            return compat_error(400, "InvalidParameter", problem.replace("max_tokens", name), call.request_id)
    messages = [m for m in messages if isinstance(m, dict)]
    answer = Answer.build(state.config, messages, last_user_text(messages), _max_tokens(call.body))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not call.stream:
        await answer.wait_whole(state.config)
        return json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": call.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(answer.pieces)},
                        "finish_reason": answer.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": _usage(answer.prompt_tokens, len(answer.pieces)),
                "system_fingerprint": None,
            }
        )
    options = call.body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return _stream(call, state, answer, completion_id, created, include_usage)


def _stream(
    call: Call, state: SimState, answer: Answer, completion_id: str, created: int, include_usage: bool
) -> Response:
    config = state.config
    pieces, finish_reason, n_in = answer.pieces, answer.finish_reason, answer.prompt_tokens
    model = call.model

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            "usage": None,
            "system_fingerprint": None,
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        await sleep_ms(config.ttft_ms)
        yield chunk({"role": "assistant", "content": ""}, None)
        for i, piece in enumerate(pieces):
            if i:
                await sleep_ms(config.token_delay_ms)
            yield chunk({"content": piece}, None)
        yield chunk({"content": ""}, finish_reason)
        if include_usage:
            usage = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(n_in, len(pieces)),
                "system_fingerprint": None,
            }
            yield b"data: " + orjson.dumps(usage) + b"\n\n"
        yield DONE

    fault = call.fault
    error_chunk = None
    if fault is not None and fault.cut_after is not None and fault.status is not None:
        error = orjson.loads(
            compat_error(fault.status, fault.error_code, fault.error_message, call.request_id).body
        )
        error_chunk = b"data: " + orjson.dumps(error) + b"\n\n"
    return SimStream(
        events,
        cut_after=fault.cut_after if fault else None,
        error_chunk=error_chunk,
        watch_disconnect=config.token_delay_ms > 0 or config.ttft_ms > 0,
    )
