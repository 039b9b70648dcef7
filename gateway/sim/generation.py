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

from gateway.dashscope.bodies import (
    EMPTY_INPUT,
    GENERATION_PATH,
    bad_max_tokens,
    generation_input,
    generation_output,
    generation_usage,
    json_response,
    max_tokens,
    parameters,
    result_format,
)
from gateway.dashscope.errors import DashScopeError, native_error
from gateway.dashscope.sse import sse_event
from gateway.sim import tool_wire
from gateway.sim.admission import Call, admit
from gateway.sim.config import SimConfig
from gateway.sim.http_common import SimStream, cut_error_event, paced_pieces, sleep_ms
from gateway.sim.models import is_generation_model
from gateway.sim.reply import plan_reply
from gateway.sim.state import SimState
from gateway.sim.text import answer_for, prompt_tokens, truncate
from gateway.sim.tools import ToolCall

PATH = GENERATION_PATH


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


async def text_generation(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(request, state, "generation", is_generation_model, native_error)
    if isinstance(call, Response):
        return call
    parsed = generation_input(call.body)
    if parsed is None:
        call.record["status"] = 400
        return native_error(400, "InvalidParameter", EMPTY_INPUT, call.request_id)
    messages, user_text = parsed
    params = parameters(call.body)
    problem = bad_max_tokens(params.get("max_tokens"))
    if problem:
        call.record["status"] = 400
        return native_error(400, "InvalidParameter", problem, call.request_id)
    fmt = result_format(params)
    try:
        plan = plan_reply(state.config, call.model, messages, user_text, params, call.fault)
    except DashScopeError as exc:
        call.record["status"] = exc.status
        return native_error(exc.status, exc.code, exc.message, call.request_id)
    if plan.calls:
        n_in = prompt_tokens(messages) + plan.tool_tokens
        return await _tool_reply(call, state, plan.calls, n_in, params.get("incremental_output") is True)
    answer = Answer.from_text(plan.text, messages, max_tokens(params), plan.tool_tokens)
    if not call.stream:
        await answer.wait_whole(state.config)
        return json_response(
            {
                "output": generation_output("".join(answer.pieces), answer.finish_reason, fmt),
                "usage": generation_usage(answer.prompt_tokens, len(answer.pieces)),
                "request_id": call.request_id,
            }
        )
    return _stream(call, state, answer, fmt, params.get("incremental_output"))


async def _tool_reply(
    call: Call, state: SimState, calls: list[ToolCall], n_in: int, incremental: bool
) -> Response:
    def body(entries: list[dict[str, Any]], finish: str, n_out: int) -> dict[str, Any]:
        message = {"role": "assistant", "content": "", "tool_calls": entries}
        return {
            "output": {"choices": [{"finish_reason": finish, "message": message}]},
            "usage": generation_usage(n_in, n_out),
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


def _stream(call: Call, state: SimState, answer: Answer, fmt: str, incremental: Any) -> Response:
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
                "output": generation_output(chunk, "null", fmt),
                "usage": generation_usage(n_in, i + 1),
                "request_id": call.request_id,
            }
            yield sse_event(i + 1, body)
        final = {
            "output": generation_output("" if incremental else text, finish_reason, fmt),
            "usage": generation_usage(n_in, len(pieces)),
            "request_id": call.request_id,
        }
        yield sse_event(len(pieces) + 1, final)
        call.record["finished"] = True

    return sse_response(call, events, config)
