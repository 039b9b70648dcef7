"""Qwen-VL chat on ``POST /api/v1/services/aigc/multimodal-generation/generation``.

Why a separate handler from text generation: this endpoint's wire differs (reference §3.1):
message ``content`` is a list of one-key items (``{"image": ...}``, ``{"text": ...}``) both ways,
so replies are ``content: [{"text": "..."}]`` (tool-call chunks carry ``content: []``), and usage
adds ``image_tokens`` and ``input_tokens_details {text_tokens, image_tokens}``. Tools and JSON
mode follow the same rules as the text endpoint (``reply``, ``tool_wire``), per model capability.
Streaming mirrors the text endpoint: one word per chunk (cumulative text when
``incremental_output`` is not true), then a closing chunk with the finish reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response

from gateway.dashscope.bodies import bad_max_tokens, json_response, last_user_text
from gateway.dashscope.errors import invalid
from gateway.dashscope.sse import sse_event
from gateway.sim import tool_wire
from gateway.sim.admission import Call
from gateway.sim.capabilities import capabilities
from gateway.sim.generation import sse_response
from gateway.sim.http_common import paced_pieces, sleep_ms
from gateway.sim.reply import plan_reply
from gateway.sim.state import SimState
from gateway.sim.text import prompt_tokens, truncate
from gateway.sim.vision import ImageInfo, describe, image_parts, inspect


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    data = body.get("input")
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not any(isinstance(m, dict) for m in messages):
        raise invalid("Input should contain a non-empty 'messages'.")
    return [m for m in messages if isinstance(m, dict)]


def _last_user_index(messages: list[dict[str, Any]]) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)


async def vl_chat(call: Call, state: SimState) -> Response:
    """Answer one VL chat call; raises DashScopeError for refused input (the caller answers it)."""
    config = state.config
    messages = _messages(call.body)
    params = call.body.get("parameters") if isinstance(call.body.get("parameters"), dict) else {}
    problem = bad_max_tokens(params.get("max_tokens"))
    if problem:
        raise invalid(problem)
    caps = capabilities(call.model, config.model_capabilities)
    parts = image_parts(messages)
    high_res = params.get("vl_high_resolution_images") is True
    infos: list[ImageInfo] = await asyncio.to_thread(lambda: [inspect(p, caps, high_res) for p in parts])
    last = _last_user_index(messages)
    shown = [info for part, info in zip(parts, infos, strict=True) if part.message_index == last]
    user_text = last_user_text(messages)
    default = describe(shown) if shown else None
    plan = plan_reply(config, call.model, messages, user_text, params, call.fault, default_text=default)
    n_text = prompt_tokens(messages) + plan.tool_tokens
    n_image = sum(info.tokens for info in infos)

    def usage(n_out: int) -> dict[str, Any]:
        n_in = n_text + n_image
        out: dict[str, Any] = {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
        if n_image:
            out["image_tokens"] = n_image
        out["input_tokens_details"] = {"text_tokens": n_text, "image_tokens": n_image}
        return out

    def body(message: dict[str, Any], finish: str, n_out: int) -> dict[str, Any]:
        return {
            "output": {"choices": [{"finish_reason": finish, "message": message}]},
            "usage": usage(n_out),
            "request_id": call.request_id,
        }

    incremental = params.get("incremental_output") is True
    if plan.calls:

        def tool_body(entries: list[dict[str, Any]], finish: str, n_out: int) -> dict[str, Any]:
            return body({"role": "assistant", "content": [], "tool_calls": entries}, finish, n_out)

        if not call.stream:
            await tool_wire.wait_whole(plan.calls, config)
            n_out = tool_wire.output_tokens(plan.calls)
            return json_response(
                tool_body(tool_wire.entries(plan.calls), tool_wire.finish_reason(config), n_out)
            )
        return sse_response(call, tool_wire.tool_events(plan.calls, incremental, config, tool_body), config)

    max_tokens = params.get("max_tokens") if isinstance(params.get("max_tokens"), int) else None
    pieces, finish_reason = truncate(plan.text, max_tokens)

    def text_message(text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": [{"text": text}]}

    if not call.stream:
        await sleep_ms(config.ttft_ms + config.token_delay_ms * max(len(pieces) - 1, 0))
        return json_response(body(text_message("".join(pieces)), finish_reason, len(pieces)))

    async def events() -> AsyncIterator[bytes]:
        text = ""
        async for i, piece, text in paced_pieces(pieces, config.ttft_ms, config.token_delay_ms):
            yield sse_event(i + 1, body(text_message(piece if incremental else text), "null", i + 1))
        final = text_message("" if incremental else text)
        yield sse_event(len(pieces) + 1, body(final, finish_reason, len(pieces)))

    return sse_response(call, events, config)
