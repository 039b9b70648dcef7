"""Native Qwen text generation: ``POST /api/v1/services/aigc/text-generation/generation``.

Plain JSON and SSE (reference §2.2-2.3): ``id:``/``event:result``/``:HTTP_STATUS/200``/``data:``
events with cumulative usage, ``finish_reason`` the string "null" until the last event, no [DONE].
``tools``/``tool_choice``/``response_format`` are decided in ``reply`` and tool calls are written
by ``tool_wire``; a tool-call reply always uses the ``message`` result format (``output.text``
cannot carry calls).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.sim import tool_wire
from gateway.sim.admission import Call, admit
from gateway.sim.config import SimConfig
from gateway.sim.errors import SimRequestError
from gateway.sim.http_common import (
    SimStream,
    cut_error_event,
    json_response,
    native_error,
    paced_pieces,
    sleep_ms,
    sse_event,
)
from gateway.sim.models import is_generation_model
from gateway.sim.reply import plan_reply
from gateway.sim.state import SimState
from gateway.sim.text import answer_for, last_user_text, prompt_tokens, truncate
from gateway.sim.tools import ToolCall

PATH = "/api/v1/services/aigc/text-generation/generation"


def _parse_input(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
    """(messages, last user text) from ``input.messages`` or ``input.prompt``; None if neither."""
    data = body.get("input")
    if not isinstance(data, dict):
        return None
    messages = data.get("messages")
    if isinstance(messages, list) and messages:
        clean = [m for m in messages if isinstance(m, dict)]
        return clean, last_user_text(clean)
    prompt = data.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "content": prompt}], prompt
    return None


def _max_tokens(params: dict[str, Any]) -> int | None:
    value = params.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True, slots=True)
class Answer:
    """The canned reply to one generation call, shared by the native and compatible-mode APIs."""

    pieces: list[str]
    finish_reason: str
    prompt_tokens: int

    @classmethod
    def build(
        cls, config: SimConfig, messages: list[dict[str, Any]], user_text: str, max_tokens: int | None
    ) -> Answer:
        return cls.from_text(answer_for(config, user_text), messages, max_tokens)

    @classmethod
    def from_text(
        cls, text: str, messages: list[dict[str, Any]], max_tokens: int | None, extra_input: int = 0
    ) -> Answer:
        """An answer with the given text (tool-result replies, JSON-mode content, descriptions)."""
        pieces, finish_reason = truncate(text, max_tokens)
        return cls(pieces, finish_reason, prompt_tokens(messages) + extra_input)

    async def wait_whole(self, config: SimConfig) -> None:
        """Sleep as long as streaming every piece would take (for a non-streamed reply)."""
        await sleep_ms(config.ttft_ms + config.token_delay_ms * max(len(self.pieces) - 1, 0))


def bad_max_tokens(value: Any) -> str | None:
    """Bailian's complaint about a ``max_tokens`` below 1 or not an integer; None if acceptable."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return f"Range of max_tokens should be [1, 8192], got {value!r}."
    return None


def _output(text: str, finish_reason: str, result_format: str) -> dict[str, Any]:
    if result_format == "message":
        message = {"role": "assistant", "content": text}
        return {"choices": [{"finish_reason": finish_reason, "message": message}]}
    return {"text": text, "finish_reason": finish_reason}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


async def text_generation(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(request, state, "generation", is_generation_model, native_error)
    if isinstance(call, Response):
        return call
    parsed = _parse_input(call.body)
    if parsed is None:
        call.record["status"] = 400
        return native_error(
            400,
            "InvalidParameter",
            "Input should contain a non-empty 'prompt' or 'messages'.",
            call.request_id,
        )
    messages, user_text = parsed
    params = call.body.get("parameters") if isinstance(call.body.get("parameters"), dict) else {}
    problem = bad_max_tokens(params.get("max_tokens"))
    if problem:
        call.record["status"] = 400
        return native_error(400, "InvalidParameter", problem, call.request_id)
    result_format = "message" if params.get("result_format") == "message" else "text"
    try:
        plan = plan_reply(state.config, call.model, messages, user_text, params, call.fault)
    except SimRequestError as exc:
        call.record["status"] = exc.status
        return native_error(exc.status, exc.code, exc.message, call.request_id)
    if plan.calls:
        n_in = prompt_tokens(messages) + plan.tool_tokens
        return await _tool_reply(call, state, plan.calls, n_in, params.get("incremental_output") is True)
    answer = Answer.from_text(plan.text, messages, _max_tokens(params), plan.tool_tokens)
    if not call.stream:
        await answer.wait_whole(state.config)
        return json_response(
            {
                "output": _output("".join(answer.pieces), answer.finish_reason, result_format),
                "usage": _usage(answer.prompt_tokens, len(answer.pieces)),
                "request_id": call.request_id,
            }
        )
    return _stream(call, state, answer, result_format, params.get("incremental_output"))


async def _tool_reply(
    call: Call, state: SimState, calls: list[ToolCall], n_in: int, incremental: bool
) -> Response:
    def body(entries: list[dict[str, Any]], finish: str, n_out: int) -> dict[str, Any]:
        message = {"role": "assistant", "content": "", "tool_calls": entries}
        return {
            "output": {"choices": [{"finish_reason": finish, "message": message}]},
            "usage": _usage(n_in, n_out),
            "request_id": call.request_id,
        }

    config = state.config
    if not call.stream:
        await tool_wire.wait_whole(calls, config)
        n_out = tool_wire.output_tokens(calls)
        return json_response(body(tool_wire.entries(calls), tool_wire.finish_reason(config), n_out))
    return sse_response(call, tool_wire.tool_events(calls, incremental, config, body), config)


def sse_response(call: Call, events: Any, config: SimConfig) -> Response:
    """A native SSE reply with the call's fault (a cut after N chunks) applied."""
    fault = call.fault
    return SimStream(
        events,
        cut_after=fault.cut_after if fault else None,
        error_chunk=cut_error_event(fault, call.request_id),
        watch_disconnect=config.token_delay_ms > 0 or config.ttft_ms > 0,
    )


def _stream(call: Call, state: SimState, answer: Answer, result_format: str, incremental: Any) -> Response:
    incremental = incremental is True
    config = state.config
    pieces, finish_reason, n_in = answer.pieces, answer.finish_reason, answer.prompt_tokens

    async def events() -> AsyncIterator[bytes]:
        text = ""
        # The request log shows how far a stream got: a client that closed it early (a barge-in)
        # leaves pieces_sent < pieces and finished false.
        call.record.update(pieces=len(pieces), pieces_sent=0, finished=False)
        async for i, piece, text in paced_pieces(pieces, config.ttft_ms, config.token_delay_ms):
            call.record["pieces_sent"] = i + 1
            chunk = piece if incremental else text
            body = {
                "output": _output(chunk, "null", result_format),
                "usage": _usage(n_in, i + 1),
                "request_id": call.request_id,
            }
            yield sse_event(i + 1, body)
        final = {
            "output": _output("" if incremental else text, finish_reason, result_format),
            "usage": _usage(n_in, len(pieces)),
            "request_id": call.request_id,
        }
        yield sse_event(len(pieces) + 1, final)
        call.record["finished"] = True

    return sse_response(call, events, config)
